"""How a training process joins its launcher: one process, ``torchrun`` or ``accelerate launch``
(gloo on CPU, NCCL on CUDA), with the experiment trackers of ``train.log_with``."""

from __future__ import annotations

import os

import torch

# Where launchers put the world size: torchrun / accelerate launch, then the MPI launchers
# accelerate reads for multi-CPU runs.
_WORLD_ENV = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")


def resolve_mixed_precision(mode: str) -> str:
    """``auto`` -> ``bf16`` on a CUDA device that supports it, else ``no``."""
    if mode != "auto":
        return mode
    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"


class LaunchError(ValueError):
    """The launcher's environment and the process group this trainer joined disagree."""


class PrecisionError(ValueError):
    """A run asks for another mixed precision than the one this process already trains with."""


def launch_world_size(env: dict[str, str] | None = None) -> tuple[int, str | None]:
    """(processes the launcher started, the variable that says so); (1, None) for a plain process."""
    env = os.environ if env is None else env
    for key in _WORLD_ENV:
        if env.get(key, "").strip():
            return int(env[key]), key
    return 1, None


def check_world(joined: int, env: dict[str, str] | None = None) -> None:
    """Refuse a trainer whose group is not the one its launcher started: each process would
    otherwise train its own copy and overwrite the others' checkpoints."""
    want, key = launch_world_size(env)
    if want != joined:
        raise LaunchError(
            f"the launcher started {want} processes ({key}={want}) but this trainer joined a process group of "
            f"{joined}; every process would train its own copy. Launch with torchrun or `accelerate launch "
            f"--multi_gpu --num_processes N` (CPU too), see README 'Multi-process training'"
        )


def make_accelerator(mixed_precision: str, timeout_s: float = 1800.0, *, log_with: list[str] | None = None,
                     project_dir: str | os.PathLike | None = None):
    """An ``Accelerator`` for this run that joins the launcher's process group on any device:
    NCCL on CUDA, gloo on CPU (without ``cpu=True`` accelerate ignores a torchrun group on a
    machine without CUDA, and every process trains alone). ``timeout_s`` bounds every
    collective, so a lost peer fails the run instead of hanging it. ``log_with``: accelerate's
    experiment trackers (``train.log_with``; ``none`` or empty: none), writing under
    ``project_dir``.

    A run at another precision than an earlier one in this process is refused (``PrecisionError``)."""
    from datetime import timedelta

    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, is_initialized
    from accelerate.utils import DistributedDataParallelKwargs, InitProcessGroupKwargs

    mp = resolve_mixed_precision(mixed_precision)
    # accelerate fixes the precision once per process: AcceleratorState is a process-wide
    # singleton (every instance shares one dict), it refuses a change ("restart your runtime")
    # and has no public reset. Clearing that private dict would also switch any earlier
    # Accelerator still alive in the process to the new precision behind its back, so a change
    # is refused here with the remedy instead. No caller needs one in-process: `tj run` and
    # `tj demo` train every variant at the one train.mixed_precision, and a variant that
    # overrides it trains alone with `tj-train --variant NAME` (`tj run` then keeps that run).
    if is_initialized() and (have := AcceleratorState().mixed_precision) != mp:
        raise PrecisionError(
            f"train.mixed_precision={mixed_precision!r} ({mp}) asked for in a process that already trains with "
            f"{have!r}: accelerate fixes the precision once per process. Train this run in a process of its own "
            "(`tj-train --variant NAME`); `tj run` keeps finished runs and trains only the others"
        )
    trackers = [t for t in (log_with or []) if t != "none"]
    accelerator = Accelerator(
        mixed_precision=mp,
        log_with=trackers or None,
        project_dir=None if project_dir is None else str(project_dir),
        cpu=not torch.cuda.is_available(),
        kwargs_handlers=[
            InitProcessGroupKwargs(timeout=timedelta(seconds=timeout_s)),
            # Variants and zero loss weights leave parts of the model without a gradient; the
            # set is the same every step, which static_graph handles without the per-step graph
            # walk of find_unused_parameters.
            DistributedDataParallelKwargs(static_graph=True),
        ],
    )
    check_world(accelerator.num_processes)
    return accelerator
