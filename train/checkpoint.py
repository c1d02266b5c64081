"""Training checkpoints: everything a run needs to continue bit for bit, written atomically.

A checkpoint holds the model, optimizer and scheduler state, every RNG stream (Python, NumPy,
torch CPU and CUDA) of every process (``ranks``, one record per rank with its data position),
the step, the data position (epoch and batch within it), the best
validation score so far, and what is needed to rebuild the model without the caches
(``model_args`` and the model config). Files are written to a temp name in the same folder,
fsync'ed, renamed over the old one, and the folder fsync'ed (``thinkjepa.cache_schema.fsio``), so a kill or
a power cut at any moment leaves either the previous checkpoint or the new one, never a torn
file.

The payload holds only tensors and plain types (the NumPy RNG state travels as a tensor), so
it loads with ``torch.load(weights_only=True)``: a crafted ``.pt`` cannot run code on load.

A run folder (``seed_run_dir``: ``<train.out>/<variant>/seed-<s>``) keeps two, beside its resolved ``config.yaml``: ``last.pt`` (the newest, for
resuming) and ``best.pt`` (lowest validation ADE, for evaluation).
"""

from __future__ import annotations

import os
import random
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from thinkjepa.train.run_inputs import StaleInputError, describe_changes, digest, load_inputs

LAST = "last.pt"
BEST = "best.pt"
FORMAT_VERSION = 2
"""2: loadable with weights_only=True (plain types and tensors only)."""


def checkpoint_path(run_dir: str | Path, which: str = "last") -> Path:
    if which not in ("last", "best"):
        raise ValueError(f"checkpoint {which!r}: expected 'last' or 'best'")
    return Path(run_dir) / (LAST if which == "last" else BEST)


SUMMARY = "summary.json"
"""Written last by a run that finished: the run folder's "done" mark. A training call removes
it before it touches the folder, so a failed or interrupted run is never taken for done."""


class UnfinishedRunError(FileNotFoundError):
    """A run folder whose checkpoints are not those of a finished run."""


def check_finished(run_dir: str | Path, fingerprint: str | None) -> None:
    """Refuse a run folder that holds no finished run of ``fingerprint`` (a checkpoint's): the
    training call that wrote it failed or was stopped, or another run's summary is there."""
    import json

    path = Path(run_dir) / SUMMARY
    try:
        done = json.loads(path.read_text()).get("fingerprint")
    except (OSError, ValueError):
        done = None
    if done is None or done != fingerprint:
        why = "has no summary.json" if done is None else f"summary.json is of run {done}, the checkpoint of {fingerprint}"
        raise UnfinishedRunError(f"{run_dir}: not a finished run ({why}: the training that wrote it failed or was "
                                 "stopped); rerun `tj run train` or `tj-train` for this variant and seed")


def seed_run_dir(train_out: str | Path, variant: str, seed: int) -> Path:
    """The one home of where a variant's run for one seed lives (training writes, eval reads)."""
    return Path(train_out) / variant / f"seed-{int(seed)}"


def capture_rng() -> dict[str, Any]:
    """This process's RNG streams as tensors and plain Python values (``weights_only`` loads them)."""
    version, key, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {"name": str(version), "key": torch.from_numpy(np.asarray(key, np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    random.setstate(_as_tuples(state["python"]))
    n = state["numpy"]
    if isinstance(n, dict):
        np.random.set_state((n["name"], np.asarray(n["key"], np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    else:  # checkpoints written before the plain-types payload
        np.random.set_state(n)
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)


def rank_states(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """Per-rank ``{"rank", "epoch", "batch_in_epoch", "rng"}`` records of a checkpoint, in
    rank order (older single-process checkpoints hold one RNG state for rank 0)."""
    if "ranks" in payload:
        return list(payload["ranks"])
    ts = payload["train_state"]
    return [{"rank": 0, "epoch": ts["epoch"], "batch_in_epoch": ts["batch_in_epoch"], "rng": payload["rng"]}]


def rank_record(rank: int, train_state: dict[str, Any]) -> dict[str, Any]:
    """What one process contributes to a checkpoint: its data position and RNG streams."""
    return {"rank": rank, "epoch": int(train_state["epoch"]), "batch_in_epoch": int(train_state["batch_in_epoch"]),
            "rng": capture_rng()}


def _as_tuples(x: Any) -> Any:
    # random.setstate wants (version, tuple_of_ints, gauss); a round trip may give lists
    return tuple(_as_tuples(v) for v in x) if isinstance(x, (list, tuple)) else x


def save_atomic(payload: dict[str, Any], path: str | Path) -> Path:
    """``torch.save`` to a unique temp file beside ``path``, fsync, rename over ``path``, fsync the folder."""
    from thinkjepa.cache_schema.fsio import clean_stale_temps, fsync_dir, temp_name

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(path.parent)
    tmp = temp_name(path)
    try:
        with open(tmp, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A checkpoint payload, loaded with ``weights_only=True`` (tensors and plain types only)."""
    import pickle

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}: train that variant first (`tj-train --variant NAME` or `tj run`)")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise ValueError(f"{path}: refusing to load a checkpoint that holds more than tensors and plain types "
                         f"(made by an older version, or crafted): {str(e).splitlines()[0]}") from e
    except Exception as e:  # noqa: BLE001 - random bytes fail anywhere in the unpickler (IndexError, KeyError, ...)
        raise ValueError(f"{path}: unreadable checkpoint (torn or damaged): {type(e).__name__}: {e}") from e
    if not isinstance(payload, dict):
        raise ValueError(f"{path}: not a checkpoint (a {type(payload).__name__})")
    if payload.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: checkpoint format {payload.get('format_version')!r}, expected {FORMAT_VERSION}")
    return payload


def build_payload(
    *,
    model_state: dict[str, torch.Tensor],
    optimizer_state: dict[str, Any],
    scheduler_state: dict[str, Any],
    train_state: dict[str, Any],
    model_args: dict[str, Any],
    model_cfg: dict[str, Any],
    variant: str,
    fingerprint: str,
    ranks: list[dict[str, Any]] | None = None,
    inputs: dict[str, str] | None = None,
) -> dict[str, Any]:
    """``ranks``: every process's data position and RNG state (``rank_record`` of each, in
    rank order); default: this process alone. ``inputs``: digest of the data the run reads
    (``train.run_inputs.digest``)."""
    if ranks is None:
        ranks = [rank_record(0, train_state)]
    return {
        "format_version": FORMAT_VERSION,
        "variant": variant,
        "fingerprint": fingerprint,
        "inputs": dict(inputs or {}),
        "model": {k: v.detach().cpu().clone() for k, v in model_state.items()},
        "optimizer": optimizer_state,
        "scheduler": scheduler_state,
        "ranks": list(ranks),
        "train_state": dict(train_state),
        "model_args": dict(model_args),
        "model_cfg": dict(model_cfg),
    }


def load_trained_model(
    run_dir: str | Path, which: str = "best", map_location: str | torch.device = "cpu"
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The model of a finished (or running) run, in eval mode, and its checkpoint payload.

    Falls back to ``last`` when asked for ``best`` and no validation has run yet."""
    from thinkjepa.config import ModelConfig
    from thinkjepa.train.model import ThinkJEPA

    path = checkpoint_path(run_dir, which)
    if which == "best" and not path.exists():
        path = checkpoint_path(run_dir, "last")
    payload = load_checkpoint(path, map_location)
    # the saved weights replace any pretrained init, so never fetch it again here
    model = ThinkJEPA(ModelConfig.model_validate(payload["model_cfg"]), **payload["model_args"], pretrained=False)
    model.load_state_dict(payload["model"])
    return model.eval(), payload


__all__ = [
    "BEST",
    "LAST",
    "build_payload",
    "capture_rng",
    "checkpoint_path",
    "load_checkpoint",
    "load_trained_model",
    "rank_record",
    "rank_states",
    "restore_rng",
    "save_atomic",
    "seed_run_dir",
]


# -- resume policy ---------------------------------------------------------------------------

RESUME_MODES = ("auto", "resume", "restart")
"""``auto`` resumes when settings and data match, starts afresh when the settings changed and
refuses when the data changed; ``resume`` refuses unless it can resume; ``restart`` starts afresh."""


def resume_decision(run_dir: Path, fingerprint: str, inputs: dict, resume: str) -> list[Path]:
    """The checkpoints to set aside before starting (none: resume ``last.pt`` or start afresh
    in an empty folder); StaleInputError when ``resume`` forbids what the folder holds."""
    if resume not in RESUME_MODES:
        raise ValueError(f"resume must be one of {RESUME_MODES}, got {resume!r}")
    present = [p for p in (checkpoint_path(run_dir, w) for w in ("last", "best")) if p.exists()]
    if resume == "restart":
        return present
    last = checkpoint_path(run_dir, "last")
    if not last.exists():
        if resume == "resume":
            raise StaleInputError(f"{run_dir}: nothing to resume (no {last.name}); drop --resume to start")
        return [p for p in present if _fingerprint_of(p) != fingerprint]
    payload = _load_or_none(last)
    if payload is None or payload["fingerprint"] != fingerprint:
        if resume == "resume":
            raise StaleInputError(f"{run_dir}: {last.name} was made with other settings; refusing to resume "
                                  "(--restart starts over)")
        return present
    changes = describe_changes(payload.get("inputs") or None, digest(inputs), load_inputs(run_dir), inputs)
    if changes:
        raise StaleInputError(
            f"{run_dir}: the data changed since {last.name} was written: {'; '.join(changes)}. "
            "Refusing to resume on other data: pass --restart to start over (the old checkpoints are kept as "
            "*.stale-*), or restore the data to resume")
    return [p for p in present if _fingerprint_of(p) != fingerprint]


def _load_or_none(path: Path) -> dict | None:
    try:
        return load_checkpoint(path)
    except ValueError as e:  # an older format (not weights_only-safe) or damaged: never resumed
        warnings.warn(str(e), stacklevel=4)
        return None


def _fingerprint_of(path: Path) -> str | None:
    payload = _load_or_none(path)
    return None if payload is None else payload["fingerprint"]


def set_aside(run_dir: Path, paths: list[Path]) -> None:
    """Rename checkpoints that will not be resumed (``*.stale-<time>.pt``): evaluation can never
    pick up a ``best.pt`` of another configuration or other data."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for path in paths:
        stale = path.with_name(f"{path.stem}.stale-{stamp}.pt")
        path.rename(stale)
        # the decision is resume_decision's (other settings or data, --restart, or unreadable,
        # which _load_or_none already said): this line says only where the file went
        warnings.warn(f"{run_dir}: {path.name} is not continued (other settings or data, a restart, or unreadable); "
                      f"kept as {stale.name}", stacklevel=4)
