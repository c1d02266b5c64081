"""Forecasts of trained checkpoints on a fixed window set: one-shot, recursive rollouts and
guidance ablations, reduced as they stream to errors and latent statistics.

Model code stays free of I/O: this module feeds ``ThinkJEPA`` batches built by the training
dataset (``WindowDataset`` over an explicit window list) and scores its outputs against the
targets of ``thinkjepa.evaluate.windows``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from thinkjepa.config import PipelineConfig
from thinkjepa.evaluate.errors import joint_errors
from thinkjepa.evaluate.latent import LatentStep
from thinkjepa.train.checkpoint import checkpoint_path, load_trained_model, seed_run_dir
from thinkjepa.train.dataset import WindowDataset, WindowRef
from thinkjepa.train.model import gates_tanh


def find_runs(cfg: PipelineConfig, variant: str) -> dict[int, Path]:
    """``{seed: run_dir}`` of every seed in ``train.seeds`` for ``variant``; an error naming the
    variant, seed and folder when one has no checkpoint."""
    out = {}
    for seed in cfg.train.seeds:
        run = seed_run_dir(cfg.path(cfg.train.out), variant, seed)
        if not (checkpoint_path(run, "best").exists() or checkpoint_path(run, "last").exists()):
            raise FileNotFoundError(f"variant {variant!r}, seed {seed}: no checkpoint in {run} (train it: `tj-train --variant {variant} --seed {seed}`)")
        out[seed] = run
    return out


def gate_values(run_dir: str | Path, which: str = "best") -> list[float] | None:
    """tanh(gate) of every predictor block of a trained run (how much guidance each block
    lets in); None for a model without guidance."""
    return gates_of(load_trained_model(run_dir, which)[0])


def gates_of(model: torch.nn.Module) -> list[float] | None:
    return gates_tanh(model)


@dataclass
class Rollout:
    """Errors of one rollout mode on the rollout windows, and latent statistics per step."""

    err: np.ndarray  # [Nr, K*F, 52]
    latent: list[LatentStep]


@dataclass
class ModelRun:
    """One trained model (variant, seed) on one window set."""

    name: str
    seed: int | None
    window_ids: list[str]
    err: np.ndarray  # [N, F, 52] one-shot
    latent: LatentStep | None = None
    rollouts: dict[str, Rollout] = field(default_factory=dict)
    pred: np.ndarray | None = None  # [N, F, 52, 3] world-frame one-shot forecasts (kept when asked)
    checkpoint: dict | None = None
    trainable_params: int | None = None  # of the model (0 for a baseline); None where unknown


def _loader(ds: Dataset, batch_size: int) -> DataLoader:
    # in order, no workers: the window order is the set's order
    return DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=0)


@torch.no_grad()
def run_model(
    model: torch.nn.Module,
    dataset: Dataset,
    window_ids: list[str],
    targets: np.ndarray,
    *,
    batch_size: int,
    rollout: dict[str, int] | None = None,
    rollout_rows: list[int] | None = None,
    rollout_targets: np.ndarray | None = None,
    encoded_future: list[list[np.ndarray | None]] | None = None,
    keep_pred: bool = False,
    name: str = "",
    seed: int | None = None,
) -> ModelRun:
    """Score ``model`` on ``dataset`` (sample i = window ``window_ids[i]``, target ``targets[i]``).

    ``rollout`` maps mode -> steps; ``rollout_rows`` are the dataset rows with that many steps
    of targets (``rollout_targets[j]`` for row ``rollout_rows[j]``); ``encoded_future[i][k]``
    is the encoder's latents of step k of row i, or None where none exist."""
    rows = {r: j for j, r in enumerate(rollout_rows or [])}
    errs, preds = [], []
    one_shot = LatentStep()
    roll_err: dict[str, list[np.ndarray]] = {m: [] for m in (rollout or {})}
    roll_lat = {m: [LatentStep() for _ in range(k)] for m, k in (rollout or {}).items()}
    i0 = 0
    device = next(model.parameters()).device
    for batch in _loader(dataset, batch_size):
        batch = {k: v.to(device) for k, v in batch.items()}
        out = {k: v.cpu() for k, v in model(batch).items()}
        b = out["joints_world"].shape[0]
        world = out["joints_world"].double().numpy()
        errs.append(joint_errors(world, targets[i0 : i0 + b]))
        if keep_pred:
            preds.append(world.astype(np.float32))
        lat = out["pred_latents"].float().numpy()
        for j in range(b):
            enc = batch["future_latents"][j].cpu().numpy() if "future_latents" in batch else None
            one_shot.add(lat[j], enc)
        sel = [j for j in range(b) if i0 + j in rows]
        if rollout and sel:
            sub = {k: v[sel] for k, v in batch.items()}
            tgt = rollout_targets[[rows[i0 + j] for j in sel]]
            for mode, steps in rollout.items():
                ro = {k: v.cpu() for k, v in model.rollout(sub, steps, mode).items()}
                roll_err[mode].append(joint_errors(ro["joints_world"].double().numpy(), tgt))
                lat_r = ro["pred_latents"].float().numpy()
                tf = lat_r.shape[1] // steps
                for jj, j in enumerate(sel):
                    for k in range(steps):
                        enc = encoded_future[i0 + j][k] if encoded_future is not None else None
                        roll_lat[mode][k].add(lat_r[jj, k * tf : (k + 1) * tf], enc)
        i0 += b
    if i0 != len(window_ids):
        raise RuntimeError(f"{name}: scored {i0} windows, expected {len(window_ids)}")
    return ModelRun(
        name=name,
        seed=seed,
        window_ids=list(window_ids),
        err=np.concatenate(errs),
        latent=one_shot,
        rollouts={m: Rollout(np.concatenate(roll_err[m]), roll_lat[m]) for m in roll_err if roll_err[m]},
        pred=np.concatenate(preds) if keep_pred else None,
        trainable_params=trainable_parameters(model),
    )


def variant_dataset(cfg: PipelineConfig, variant: str, split: str, refs: list[WindowRef]) -> WindowDataset:
    """The variant's dataset over exactly ``refs`` (its guidance mode, its streams)."""
    ds = WindowDataset(cfg.for_variant(variant), split, windows=refs)
    if ds.window_ids != [r.key for r in refs]:
        missing = sorted(set(r.key for r in refs) - set(ds.window_ids))
        raise ValueError(f"variant {variant!r}: window {missing[:1]} of the common set is missing from its caches")
    return ds


def load_run(run_dir: Path) -> tuple[torch.nn.Module, dict]:
    """The run's best model (on the GPU when there is one) and what metrics.json says of it."""
    model, payload = load_trained_model(run_dir, "best", map_location="cpu")
    if torch.cuda.is_available():
        model = model.cuda()
    info = {
        "path": str(checkpoint_path(run_dir, "best") if checkpoint_path(run_dir, "best").exists() else checkpoint_path(run_dir, "last")),
        "step": payload.get("train_state", {}).get("step"),
        "best_val_ade": payload.get("train_state", {}).get("best_val_ade"),
        "fingerprint": payload.get("fingerprint"),
        "trainable_params": trainable_parameters(model),
    }
    return model, info


def trainable_parameters(model: torch.nn.Module) -> int:
    """What capacity-matched means: the count of parameters training updates."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


__all__ = ["ModelRun", "Rollout", "find_runs", "gate_values", "gates_of", "load_run", "run_model", "trainable_parameters", "variant_dataset"]
