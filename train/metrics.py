"""Trajectory metrics in metres (pure torch): ADE, FDE, accuracy under a distance threshold.

Definitions follow the paper: ADE = mean L2 error over all future frames and the 52 joints;
FDE = the same over the last future frame only; Acc = fraction of joint errors below the
threshold (0.05 m by default). ``mask`` ([B, F, J] bool, e.g. ``target_conf > 0``) restricts
every mean to the joints that were tracked; samples in a batch weigh by their valid joints.
"""

from __future__ import annotations

from torch import Tensor


def joint_errors(pred: Tensor, target: Tensor) -> Tensor:
    """Euclidean error per joint: [B, F, J, 3] x2 -> [B, F, J]."""
    if pred.shape != target.shape or pred.shape[-1] != 3:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} must both be [B, F, J, 3]")
    return (pred.float() - target.float()).norm(dim=-1)


def _masked_mean(x: Tensor, mask: Tensor | None) -> Tensor:
    if mask is None:
        return x.mean()
    if mask.shape != x.shape:
        raise ValueError(f"mask has shape {tuple(mask.shape)}; expected {tuple(x.shape)}")
    w = mask.to(x.dtype)
    return (x * w).sum() / w.sum().clamp(min=1.0)


def ade(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    return _masked_mean(joint_errors(pred, target), mask)


def fde(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    err = joint_errors(pred, target)[:, -1]
    return _masked_mean(err, None if mask is None else mask[:, -1])


def accuracy(pred: Tensor, target: Tensor, threshold: float = 0.05, mask: Tensor | None = None) -> Tensor:
    return _masked_mean((joint_errors(pred, target) < threshold).float(), mask)
