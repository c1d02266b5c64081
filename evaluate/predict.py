"""Forecasts on a held-out split: trained variants (best checkpoint) and simple baselines."""

from __future__ import annotations

import numpy as np
import torch

from thinkjepa.config import PipelineConfig
from thinkjepa.evaluate.report import Forecasts
from thinkjepa.train.checkpoint import load_trained_model
from thinkjepa.train.dataset import EpochBatchSampler, WindowDataset, make_loader
from thinkjepa.train.head import camera_to_world


def _loader(ds: WindowDataset, batch_size: int):
    sampler = EpochBatchSampler(len(ds), batch_size, 0, shuffle=False, rank=0, world=1, pad=False)
    return make_loader(ds, sampler, num_workers=0)


@torch.no_grad()
def forecast_variant(cfg: PipelineConfig, variant: str, split: str) -> Forecasts:
    """One-shot forecasts of a trained variant (best checkpoint by validation ADE)."""
    vcfg = cfg.for_variant(variant)
    run_dir = cfg.path(cfg.train.out) / variant
    model, payload = load_trained_model(run_dir, "best")
    ds = WindowDataset(vcfg, split)
    preds, targets, confs = [], [], []
    for batch in _loader(ds, vcfg.train.batch_size):
        out = model(batch)
        preds.append(out["joints_world"].float().numpy())
        targets.append(batch["target_joints"].float().numpy())
        confs.append(batch["target_conf"].float().numpy())
    return Forecasts(
        model=variant,
        window_ids=ds.window_ids,
        pred=np.concatenate(preds),
        target=np.concatenate(targets),
        conf=np.concatenate(confs),
        extra={"checkpoint_step": payload.get("train_state", {}).get("step")},
    )


@torch.no_grad()
def forecast_baselines(cfg: PipelineConfig, split: str) -> list[Forecasts]:
    """Baselines that need no training: hold the last observed pose for every future frame."""
    ds = WindowDataset(cfg, split, guidance="none")
    preds, targets, confs = [], [], []
    for batch in _loader(ds, cfg.train.batch_size):
        last_world = camera_to_world(batch["past_joints_cam"].float()[:, None], batch["cam_pose"].float())[:, 0]
        f = batch["target_joints"].shape[1]
        preds.append(last_world[:, None].expand(-1, f, -1, -1).numpy())
        targets.append(batch["target_joints"].float().numpy())
        confs.append(batch["target_conf"].float().numpy())
    return [
        Forecasts(
            model="last_observed",
            window_ids=ds.window_ids,
            pred=np.concatenate(preds),
            target=np.concatenate(targets),
            conf=np.concatenate(confs),
        )
    ]
