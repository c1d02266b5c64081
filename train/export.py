"""A training run's model in the release format (``train.hub``): the export every finished run
writes to ``<run>/pretrained``, and the grouping of saved models that ``tj-eval --model`` takes.

Kept apart from ``train.hub``: the model class inherits that mixin, so it must not reach the
checkpoint and run-folder code this module uses.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from thinkjepa.train.hub import EXPORT_DIR, read_config, resolve


def export_run(run_dir: str | Path, out: str | Path | None = None, which: str = "best",
               eval_table: str | None = None) -> Path:
    """Save a training run's model (``best``, else ``last``) as a pretrained folder (default
    ``<run_dir>/pretrained``) with its model card: the run's ``config.yaml``, the data digest
    and fingerprint of its checkpoint, and ``eval_table`` where given (``tj-eval`` passes the
    run's table, ``evaluate.report.eval_table``; without one the card says it was not evaluated)."""
    import yaml

    from thinkjepa.train.checkpoint import load_trained_model

    run_dir = Path(run_dir)
    model, payload = load_trained_model(run_dir, which)
    cfg_file = run_dir / "config.yaml"
    ts = payload.get("train_state", {})
    card = {
        "variant": payload.get("variant"),
        "seed": (yaml.safe_load(cfg_file.read_text()) or {}).get("train", {}).get("seed") if cfg_file.is_file() else None,
        "training_config": yaml.safe_load(cfg_file.read_text()) if cfg_file.is_file() else None,
        "data_digest": {"run_fingerprint": payload.get("fingerprint"), **payload.get("inputs", {})},
        "step": ts.get("step"), "best_val_ade": ts.get("best_val_ade"), "eval_table": eval_table,
    }
    return model.save_pretrained(out if out is not None else run_dir / EXPORT_DIR, {k: v for k, v in card.items() if v is not None})


def saved_models(paths: list[str]) -> tuple[dict[str, dict[int, Path]], dict[str, Any]]:
    """Saved model folders (or Hub ids) grouped ``{variant: {seed: folder}}``, and the model
    config of the first (what the eval data must be built for). A folder without a recorded
    seed gets the next free one; two models of one variant and seed are refused."""
    out: dict[str, dict[int, Path]] = {}
    first: dict[str, Any] = {}
    for p in paths:
        folder = resolve(p)
        conf = read_config(folder)
        first = first or conf["model_cfg"]
        variant = conf.get("variant") or conf["model_cfg"]["variant"]
        runs = out.setdefault(variant, {})
        seed = conf.get("seed")
        seed = int(seed) if seed is not None else next(i for i in range(len(paths) + 1) if i not in runs)
        if seed in runs:
            raise ValueError(f"{p}: a second model of variant {variant!r} with seed {seed} (first: {runs[seed]})")
        runs[seed] = folder
    return out, first


def export_after_training(run_dir: str | Path, eval_table: str | None = None) -> Path | None:
    """``export_run`` at the end of a training run, and again after ``tj-eval`` scored it (with
    its ``eval_table``): a failure is a warning naming the run, never a failed run or eval (the
    checkpoints are what training promises; the export can be redone with ``export_run``)."""
    import warnings

    try:
        return export_run(run_dir, eval_table=eval_table)
    except Exception as e:  # noqa: BLE001 - the trained checkpoints stand whatever happens here
        warnings.warn(f"{run_dir}: trained, but saving {EXPORT_DIR}/ failed ({type(e).__name__}: {e}); "
                      "retry with thinkjepa.train.export.export_run", stacklevel=2)
        return None


__all__ = ["export_after_training", "export_run", "saved_models"]
