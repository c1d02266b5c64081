"""The seed loop of ``tj run`` / ``tj-train``: one run per seed, finished runs left alone."""

from __future__ import annotations

import json
from pathlib import Path

from thinkjepa.config import PipelineConfig
from thinkjepa.provenance import stage_fingerprint
from thinkjepa.train import loop
from thinkjepa.train.checkpoint import SUMMARY, checkpoint_path, seed_run_dir
from thinkjepa.train.dataset import guidance_mode_for
from thinkjepa.train.run_inputs import run_fingerprint, training_data


def train_seeds(
    cfg: PipelineConfig,
    variant: str,
    seeds: list[int] | None = None,
    *,
    skip_finished: bool = False,
    progress: bool = True,
    resume: str = "auto",
    allow_stale: bool = False,
) -> dict[int, tuple[Path, bool]]:
    """Train ``variant`` once per seed (default ``train.seeds``): ``{seed: (run_dir, ran)}``.

    With ``skip_finished`` a seed whose run finished under the settings it would get now
    (``summary.json`` carries the same fingerprint) is not touched: ``tj run`` reruns only the
    seeds whose inputs changed. ``resume`` is passed to every ``run_training`` (``restart``
    also retrains finished seeds)."""
    out: dict[int, tuple[Path, bool]] = {}
    data, code = (training_data(cfg), stage_fingerprint("train")) if skip_finished else (None, None)
    for seed in cfg.train.seeds if seeds is None else seeds:
        vcfg = loop.with_seed(cfg.for_variant(variant), seed)
        run_dir = seed_run_dir(cfg.path(vcfg.train.out), variant, seed)
        fingerprint = run_fingerprint(vcfg, variant, guidance_mode_for(vcfg))
        mode = resume
        if skip_finished and resume != "restart":
            done = _summary(run_dir)
            if _finished(run_dir, fingerprint, data, code):
                out[seed] = (run_dir, False)
                continue
            if done is not None and done.get("fingerprint") == fingerprint:
                mode = "restart"  # finished on other data or code: resuming would keep its weights
        out[seed] = (loop.run_training(cfg, variant, seed=seed, progress=progress, resume=mode,
                                  allow_stale=allow_stale), True)
    return out


def _summary(run_dir: Path) -> dict | None:
    try:
        return json.loads((run_dir / SUMMARY).read_text())
    except (OSError, ValueError):
        return None


def _finished(run_dir: Path, fingerprint: str, data: dict | None = None, code: str | None = None) -> bool:
    """The run finished (``summary.json``, written last) under ``fingerprint`` and, when given,
    on ``data`` (``run_inputs.training_data``) with ``code`` (the train stage fingerprint)."""
    summary = _summary(run_dir)
    if summary is None or not checkpoint_path(run_dir, "last").exists():
        return False
    return (summary.get("fingerprint") == fingerprint and (data is None or summary.get("data") == data)
            and (code is None or summary.get("code") == code))


def finished_runs(cfg: PipelineConfig) -> dict[str, str | None]:
    """``{variant/seed-N: fingerprint}`` of every run ``tj run`` trains, from its ``summary.json``
    (``None`` where the run has not finished: never trained, failed or interrupted)."""
    out: dict[str, str | None] = {}
    for variant in cfg.eval.variants:
        for seed in cfg.train.seeds:
            run_dir = seed_run_dir(cfg.path(cfg.train.out), variant, seed)
            done = _summary(run_dir) if checkpoint_path(run_dir, "last").exists() else None
            out[f"{variant}/seed-{seed}"] = (done or {}).get("fingerprint")
    return out
