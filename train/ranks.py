"""What the ranks of a data-parallel run share: records gathered, scalars averaged, the
padding of a short last batch, and the RNG streams a rank resumes with."""

from __future__ import annotations

import warnings
from typing import Any

import torch

from thinkjepa.train.checkpoint import rank_states
from thinkjepa.train.dataset import EpochBatchSampler


def gather_rank_records(record: dict[str, Any], world: int) -> list[dict[str, Any]]:
    """Every rank's data position and RNG record, in rank order (a collective: all ranks call it)."""
    if world == 1:
        return [record]
    from accelerate.utils import gather_object

    return gather_object([record])  # one list per rank, concatenated in rank order


def rank_rng(payload: dict[str, Any], rank: int, world: int, seed: int) -> dict[str, Any] | None:
    """The RNG state this rank resumes with, or ``None`` after reseeding.

    Same world size: the rank's own saved streams (its saved data position must be the run's).
    Another world size: weights, optimizer, schedule and data position carry over unchanged
    (``train.batch_size`` is global, so step ``k`` covers the same windows on any number of
    processes), and each rank's streams are reseeded from ``(seed, step, rank)``: only the
    dropout noise differs from an uninterrupted run."""
    from accelerate.utils import set_seed

    records, ts = rank_states(payload), payload["train_state"]
    if len(records) == world:
        rec = records[rank]
        if rec["rank"] != rank or (rec["epoch"], rec["batch_in_epoch"]) != (ts["epoch"], ts["batch_in_epoch"]):
            raise ValueError(f"checkpoint rank record {rec['rank']} is at epoch {rec['epoch']} batch "
                             f"{rec['batch_in_epoch']}, the run at epoch {ts['epoch']} batch {ts['batch_in_epoch']}")
        return rec["rng"]
    if rank == 0:
        warnings.warn(
            f"resuming a {len(records)}-process checkpoint (step {ts['step']}) on {world} processes: weights, "
            "optimizer, schedule and data position carry over; dropout noise is reseeded per rank", stacklevel=4)
    set_seed(seed + 1_000_003 * (ts["step"] + 1) + rank)
    return None


def padding_weight(sampler: EpochBatchSampler, batch_in_epoch: int, batch: dict[str, torch.Tensor],
                    device: torch.device) -> torch.Tensor | None:
    """Per-window loss weight of this rank's batch: 0 for the padding of a short last step."""
    size = next(iter(batch.values())).shape[0]
    valid = sampler.valid_count(batch_in_epoch)
    if sampler.world > 1 and size != sampler.local_batch:
        raise RuntimeError(f"rank {sampler.rank}: batch of {size} windows, expected {sampler.local_batch}")
    if valid == size:
        return None
    return (torch.arange(size, device=device) < valid).float()


def mean_over_ranks(logs: dict[str, float], accelerator) -> dict[str, float]:
    """Train scalars averaged over the ranks: the losses exactly (each rank holds its share of the
    global loss), ``ade`` as the mean of the ranks' batch ADEs."""
    if accelerator.num_processes == 1:
        return logs
    values = accelerator.reduce(torch.tensor(list(logs.values()), device=accelerator.device), "mean")
    return dict(zip(logs, values.tolist(), strict=True))
