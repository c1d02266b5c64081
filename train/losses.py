"""Training loss: world-frame joint MSE + latent MSE, weighted by ``TrainConfig``.

``joint_loss_weight * MSE(joints_world, target_joints)`` (only joints with confidence > 0
count when ``target_conf`` is in the batch, so untracked joints teach nothing; divided by the
``joint_scale``² when given, i.e. in units of the train-split offset RMS) plus
``latent_loss_weight * MSE(pred_latents, future_latents)``. A zero weight skips that term
(and its batch key). Under ``train.rollout_steps`` > 1 the joints cover every rollout step and
the latent term step 1 (the cache holds only the window's own encoded future).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from .metrics import ade


def _joint_terms(pred: Tensor, target: Tensor, conf: Tensor | None, weight: Tensor | None) -> tuple[Tensor, Tensor]:
    """(sum of squared errors, coordinates counted): joints with conf > 0, windows by ``weight``."""
    if pred.shape != target.shape:
        raise ValueError(f"joints {tuple(pred.shape)} vs target_joints {tuple(target.shape)}")
    sq = (pred.float() - target.float()).pow(2)
    w = sq.new_ones(sq.shape[:-1]) if conf is None else (conf > 0).to(sq.dtype)
    if weight is not None:
        w = w * weight.to(sq.dtype).view(-1, *([1] * (w.ndim - 1)))
    return (sq * w[..., None]).sum(), w.sum() * 3


def _latent_terms(pred: Tensor, target: Tensor, weight: Tensor | None) -> tuple[Tensor, Tensor]:
    if pred.shape != target.shape:
        raise ValueError(f"pred_latents {tuple(pred.shape)} vs future_latents {tuple(target.shape)}")
    sq = (pred.float() - target.float()).pow(2).flatten(1).sum(1)
    per_window = pred[0].numel()
    if weight is None:
        return sq.sum(), sq.new_tensor(float(sq.shape[0] * per_window))
    weight = weight.to(sq.dtype)
    return (sq * weight).sum(), weight.sum() * per_window


def _ratio(total: Tensor, count: Tensor) -> Tensor:
    # a zero count has a zero total (nothing tracked, or only padding): the term is 0
    return total / torch.where(count > 0, count, torch.ones_like(count))


def joint_mse(pred: Tensor, target: Tensor, conf: Tensor | None = None) -> Tensor:
    """Mean squared error per coordinate; with ``conf`` [B, F, J] only joints with conf > 0."""
    return _ratio(*_joint_terms(pred, target, conf, None))


def latent_mse(pred: Tensor, target: Tensor) -> Tensor:
    return _ratio(*_latent_terms(pred, target, None))


def compute_loss(
    out: Mapping[str, Tensor],
    batch: Mapping[str, Tensor],
    train_cfg: Any,
    joint_scale: Tensor | float | None = None,
    *,
    sample_weight: Tensor | None = None,
    share_counts: Callable[[Tensor], Tensor] | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """-> (loss, logs). ``train_cfg`` needs ``joint_loss_weight`` and ``latent_loss_weight``;
    ``joint_conf_mask`` (default True) switches the confidence mask. ``joint_scale`` (metres,
    e.g. ``ThinkJEPA.joint_scale``) expresses the joint term in that unit.

    Data parallel training: ``sample_weight`` [B] is 0 for padding windows (they count
    nowhere, logs included), and ``share_counts`` maps this process's normalising counts
    (joint coordinates, latent elements) to their mean over the processes. Each process then
    divides its sums by the global count times ``1 / world``, so the average of the processes'
    gradients (what DDP computes) is the gradient of the loss over the global batch, exactly
    as one process would compute it, however the counts split between ranks.
    """
    w_joint = float(train_cfg.joint_loss_weight)
    w_latent = float(train_cfg.latent_loss_weight)
    conf = batch["target_conf"] if getattr(train_cfg, "joint_conf_mask", True) and "target_conf" in batch else None
    zero = out["joints_world"].new_zeros((), dtype=torch.float32)
    j_sum, j_count = _joint_terms(out["joints_world"], batch["target_joints"], conf, sample_weight) if w_joint \
        else (zero, zero)
    pred_latents = out["pred_latents"]
    steps = int(getattr(train_cfg, "rollout_steps", 1))
    if steps > 1:
        # a rollout's latents, step after step: only step 1 has an encoded future in the cache
        pred_latents = pred_latents[:, : pred_latents.shape[1] // steps]
    l_sum, l_count = _latent_terms(pred_latents, batch["future_latents"], sample_weight) if w_latent \
        else (zero, zero)
    counts = torch.stack([j_count, l_count]).detach()
    if share_counts is not None:
        counts = share_counts(counts)
    l_joint, l_latent = _ratio(j_sum, counts[0]), _ratio(l_sum, counts[1])
    if w_joint and joint_scale is not None:
        # in units of the train-split offset RMS: O(1), comparable with the latent term
        l_joint = l_joint / torch.as_tensor(joint_scale, dtype=torch.float32, device=l_joint.device).pow(2)
    loss = w_joint * l_joint + w_latent * l_latent
    with torch.no_grad():
        mask = None if conf is None else conf > 0
        if sample_weight is not None:
            keep = (sample_weight > 0).view(-1, 1, 1).expand(out["joints_world"].shape[:-1])
            mask = keep if mask is None else mask & keep
        err = ade(out["joints_world"].detach(), batch["target_joints"], mask)
        # One host sync for all logged values.
        values = torch.stack([loss.detach(), l_joint.detach(), l_latent.detach(), err]).tolist()
    logs = dict(zip(("loss", "loss_joint", "loss_latent", "ade"), values, strict=True))
    return loss, logs
