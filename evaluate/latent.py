"""Latent metrics of a forecast step, accumulated over batches in O(D) memory.

Per step: L1 (mean absolute element difference), L2 (mean Euclidean distance per token) and
cosine distance (1 - cosine similarity per token) between predicted and encoded future
latents, where the encoder's latents of that step exist; and two health signals, each a
ratio to the encoded latents (every token of every window is one sample):

- collapse: mean over dimensions of the per-dimension std of the predicted latents, over
  that of the encoded ones (-> 0 when predictions collapse to one point);
- explosion: mean token norm of the predicted latents over that of the encoded ones.

A step whose ratio leaves ``HEALTHY`` is flagged in the report.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

HEALTHY = (0.5, 2.0)


@dataclass
class _Moments:
    n: int = 0
    s: np.ndarray | None = None
    ss: np.ndarray | None = None
    norm: float = 0.0

    def add(self, x: np.ndarray) -> None:
        tok = x.reshape(-1, x.shape[-1]).astype(np.float64)
        if self.s is None:
            self.s, self.ss = np.zeros(tok.shape[1]), np.zeros(tok.shape[1])
        self.n += tok.shape[0]
        self.s += tok.sum(0)
        self.ss += (tok**2).sum(0)
        self.norm += float(np.linalg.norm(tok, axis=1).sum())

    def mean_std(self) -> float:
        mean = self.s / self.n
        return float(np.sqrt(np.maximum(self.ss / self.n - mean**2, 0.0)).mean())

    def mean_norm(self) -> float:
        return self.norm / self.n


@dataclass
class LatentStep:
    """Accumulates one rollout step over batches; ``encoded`` may be missing for some windows."""

    pred: _Moments = field(default_factory=_Moments)
    enc: _Moments = field(default_factory=_Moments)
    l1: float = 0.0
    l2: float = 0.0
    cos: float = 0.0
    n_tok: int = 0
    n_elem: int = 0
    windows_with_target: int = 0

    def add(self, pred: np.ndarray, encoded: np.ndarray | None) -> None:
        """One window: ``pred`` [Tf, P, D], ``encoded`` [Tf, P, D] or None."""
        self.pred.add(pred)
        if encoded is None:
            return
        self.enc.add(encoded)
        p = pred.reshape(-1, pred.shape[-1]).astype(np.float64)
        e = encoded.reshape(-1, encoded.shape[-1]).astype(np.float64)
        self.l1 += float(np.abs(p - e).sum())
        self.l2 += float(np.linalg.norm(p - e, axis=1).sum())
        denom = np.maximum(np.linalg.norm(p, axis=1) * np.linalg.norm(e, axis=1), 1e-12)
        self.cos += float((1.0 - (p * e).sum(1) / denom).sum())
        self.n_tok += p.shape[0]
        self.n_elem += p.size
        self.windows_with_target += 1

    def summary(self, reference: LatentStep | None = None) -> dict[str, float | int | bool | str | None]:
        """Distances (None without encoded latents) and health ratios. Without encoded latents
        of its own the step is compared with ``reference``'s (the one-shot step's)."""
        ref, ref_name = (self, "own") if self.enc.n else (reference, "step 1")
        out: dict[str, float | int | bool | str | None] = {
            "windows_with_target": self.windows_with_target,
            "L1": self.l1 / self.n_elem if self.n_elem else None,
            "L2": self.l2 / self.n_tok if self.n_tok else None,
            "cos": self.cos / self.n_tok if self.n_tok else None,
            "std_ratio": None,
            "norm_ratio": None,
            "health_reference": None,
            "flag": False,
        }
        if ref is not None and ref.enc.n and self.pred.n:
            std_ref, norm_ref = ref.enc.mean_std(), ref.enc.mean_norm()
            out["std_ratio"] = self.pred.mean_std() / std_ref if std_ref > 0 else None
            out["norm_ratio"] = self.pred.mean_norm() / norm_ref if norm_ref > 0 else None
            out["health_reference"] = ref_name
            out["flag"] = any(r is not None and not HEALTHY[0] <= r <= HEALTHY[1] for r in (out["std_ratio"], out["norm_ratio"]))
        return out


__all__ = ["HEALTHY", "LatentStep"]
