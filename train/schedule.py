"""The optimizer's parameter groups and the step-wise learning-rate schedule."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from thinkjepa.config import TrainConfig


def lr_factor(total_steps: int, milestones: tuple[float, ...], gamma: float) -> Callable[[int], float]:
    """LR multiplier after ``step`` optimizer steps: ``gamma`` per milestone (fraction of the run) passed."""
    bounds = sorted(max(1, round(m * total_steps)) for m in milestones)
    return lambda step: gamma ** sum(step >= b for b in bounds)


def param_groups(model: torch.nn.Module, train: TrainConfig) -> list[dict[str, Any]]:
    """Head at ``lr_head``, everything else (predictor, pyramid, injection) at ``lr_predictor``.
    Weight decay applies to matrices only: decaying biases, norms and the zero-initialised
    injection gates would pull them towards zero for no regularising benefit."""
    head_ids = {id(p) for p in model.head_parameters()}
    groups: dict[tuple[str, bool], list[torch.nn.Parameter]] = {}
    for p in model.parameters():
        if not p.requires_grad:
            continue
        key = ("head" if id(p) in head_ids else "predictor", p.ndim >= 2)
        groups.setdefault(key, []).append(p)
    out = []
    for (name, decay), params in sorted(groups.items()):
        out.append({
            "params": params,
            "lr": train.lr_head if name == "head" else train.lr_predictor,
            "weight_decay": train.weight_decay if decay else 0.0,
            "name": f"{name}{'' if decay else '_no_decay'}",
        })
    return out
