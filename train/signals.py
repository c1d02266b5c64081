"""Stopping a run cleanly: SIGTERM / SIGINT end the current step, every rank at the same one."""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Any

import torch


class StopFlag:
    """SIGTERM / SIGINT set a flag checked between steps (a step is never cut in half)."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self._old: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        self.reason = signal.Signals(signum).name
        if signum == signal.SIGINT:
            # a second Ctrl-C means "now": back to the default behaviour
            signal.signal(signal.SIGINT, self._old.get(signal.SIGINT, signal.default_int_handler))

    @contextmanager
    def installed(self):
        if threading.current_thread() is not threading.main_thread():
            yield self  # signals can only be handled on the main thread; the caller owns them
            return
        for s in (signal.SIGTERM, signal.SIGINT):
            self._old[s] = signal.signal(s, self._handler)
        try:
            yield self
        finally:
            for s, h in self._old.items():
                signal.signal(s, h)


def stop_requested(stop: StopFlag, accelerator) -> bool:
    if accelerator.num_processes == 1:
        return stop.reason is not None
    # every rank must stop at the same step, or the collectives of the next one hang
    flag = torch.tensor([1.0 if stop.reason else 0.0], device=accelerator.device)
    return bool(accelerator.reduce(flag, "sum").item() > 0)
