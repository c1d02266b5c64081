"""Training loss: world-frame joint MSE + latent MSE, weighted by ``TrainConfig``.

``joint_loss_weight * MSE(joints_world, target_joints)`` (only joints with confidence > 0
count when ``target_conf`` is in the batch, so untracked joints teach nothing; divided by the
``joint_scale``² when given, i.e. in units of the train-split offset RMS) plus
``latent_loss_weight * MSE(pred_latents, future_latents)``. A zero weight skips that term
(and its batch key).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from .metrics import ade


def joint_mse(pred: Tensor, target: Tensor, conf: Tensor | None = None) -> Tensor:
    """Mean squared error per coordinate; with ``conf`` [B, F, J] only joints with conf > 0."""
    if pred.shape != target.shape:
        raise ValueError(f"joints {tuple(pred.shape)} vs target_joints {tuple(target.shape)}")
    sq = (pred.float() - target.float()).pow(2)
    if conf is None:
        return sq.mean()
    w = (conf > 0).to(sq.dtype)[..., None]
    return (sq * w).sum() / (w.sum() * 3).clamp(min=1.0)


def latent_mse(pred: Tensor, target: Tensor) -> Tensor:
    if pred.shape != target.shape:
        raise ValueError(f"pred_latents {tuple(pred.shape)} vs future_latents {tuple(target.shape)}")
    return (pred.float() - target.float()).pow(2).mean()


def compute_loss(out: Mapping[str, Tensor], batch: Mapping[str, Tensor], train_cfg: Any,
                 joint_scale: Tensor | float | None = None) -> tuple[Tensor, dict[str, float]]:
    """-> (loss, logs). ``train_cfg`` needs ``joint_loss_weight`` and ``latent_loss_weight``;
    ``joint_conf_mask`` (default True) switches the confidence mask. ``joint_scale`` (metres,
    e.g. ``ThinkJEPA.joint_scale``) expresses the joint term in that unit."""
    w_joint = float(train_cfg.joint_loss_weight)
    w_latent = float(train_cfg.latent_loss_weight)
    conf = batch["target_conf"] if getattr(train_cfg, "joint_conf_mask", True) and "target_conf" in batch else None
    zero = out["joints_world"].new_zeros((), dtype=torch.float32)
    l_joint = joint_mse(out["joints_world"], batch["target_joints"], conf) if w_joint else zero
    if w_joint and joint_scale is not None:
        # in units of the train-split offset RMS: O(1), comparable with the latent term
        l_joint = l_joint / torch.as_tensor(joint_scale, dtype=torch.float32, device=l_joint.device).pow(2)
    l_latent = latent_mse(out["pred_latents"], batch["future_latents"]) if w_latent else zero
    loss = w_joint * l_joint + w_latent * l_latent
    with torch.no_grad():
        mask = None if conf is None else conf > 0
        err = ade(out["joints_world"].detach(), batch["target_joints"], mask)
        # One host sync for all logged values.
        values = torch.stack([loss.detach(), l_joint.detach(), l_latent.detach(), err]).tolist()
    logs = dict(zip(("loss", "loss_joint", "loss_latent", "ade"), values, strict=True))
    return loss, logs
