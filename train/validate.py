"""Validation during training: ADE / FDE / Acc sums over a loader, reduced to metrics."""

from __future__ import annotations

import torch


@torch.no_grad()
def evaluate_loader(model: torch.nn.Module, loader, device: torch.device, acc_threshold: float,
                    rollout_steps: int = 1, rollout_mode: str = "shifted") -> dict[str, float]:
    """Sums of ADE/FDE/Acc terms over the loader's windows (unmasked, as ``tj-eval`` reports),
    over ``rollout_steps`` rollout steps (``train.rollout_steps``: the objective training
    minimises is the one that selects the best checkpoint)."""
    from thinkjepa.train.metrics import joint_errors

    was_training = model.training
    model.eval()
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # err sum, last-frame err sum, hits, windows
    counts = torch.zeros(2, dtype=torch.float64, device=device)  # joint-frames, last-frame joints
    for batch in loader:
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        out = model(batch) if rollout_steps == 1 else model(batch, rollout_steps=rollout_steps, rollout_mode=rollout_mode)
        err = joint_errors(out["joints_world"], batch["target_joints"]).double()
        sums += torch.stack([err.sum(), err[:, -1].sum(), (err < acc_threshold).sum().double(),
                             torch.tensor(float(err.shape[0]), device=device, dtype=torch.float64)])
        counts += torch.tensor([err.numel(), err[:, -1].numel()], device=device, dtype=torch.float64)
    model.train(was_training)
    return {"sums": sums, "counts": counts}


def val_metrics(sums: torch.Tensor, counts: torch.Tensor) -> dict[str, float]:
    s, c = sums.tolist(), counts.tolist()
    return {"ADE": s[0] / c[0], "FDE": s[1] / c[1], "Acc": s[2] / c[0], "windows": int(s[3])}
