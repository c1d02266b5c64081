"""Ctrl-C and SIGTERM for the long commands: stop cleanly, blame nothing on the input.

``stop_on_signals()`` (the CLI's long commands enter it before any engine starts) makes the
first SIGINT / SIGTERM *request* a stop instead of raising at a random line. Code that can stop
at a clean point (the sharded stages between engine calls, ``cooperative()``) checks
``requested()``, commits what is done and raises ``StageInterrupted``; anywhere else the
handler raises at once (there is nothing to save), as Python's default does. A second SIGINT
always raises at once.

Ctrl-C in a terminal goes to the whole process group: vLLM's engine core gets it too and
dies, so the engine call in flight fails with ``EngineDeadError``. That failure is the
interrupt, not the input: ``requested()`` is set by then (the handler is installed before the
engine starts), and the stages record no failure for results that came back after it.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_state: dict[str, Any] = {"signum": None, "depth": 0, "installed": False}


class StageInterrupted(KeyboardInterrupt):
    """A stage stopped on a signal after committing what was done (exit 130, or 143 on SIGTERM)."""

    def __init__(self, signum: int, message: str) -> None:
        super().__init__(message)
        self.signum = signum


def requested() -> int | None:
    """The signal that asked for a stop, or None."""
    return _state["signum"]


def exit_code(signum: int | None) -> int:
    """130 for SIGINT, 143 for SIGTERM: the shell's 128 + signal number."""
    return 128 + int(signum or signal.SIGINT)


def _handler(signum: int, frame: Any) -> None:
    first = _state["signum"] is None
    _state["signum"] = _state["signum"] or signum
    if signum == signal.SIGINT and not first:
        raise KeyboardInterrupt  # a second Ctrl-C means now
    if _state["depth"] == 0:
        raise StageInterrupted(signum, f"stopped by {signal.Signals(signum).name}")


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """Install the handlers (main thread only; elsewhere the caller owns the signals)."""
    if threading.current_thread() is not threading.main_thread() or _state["installed"]:
        yield
        return
    old = {s: signal.signal(s, _handler) for s in (signal.SIGINT, signal.SIGTERM)}
    _state.update(signum=None, installed=True)
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        _state.update(signum=None, installed=False)


@contextmanager
def cooperative() -> Iterator[None]:
    """A region that checks ``requested()`` at clean points: a signal only sets the flag."""
    _state["depth"] += 1
    try:
        if _state["signum"] is not None:
            raise StageInterrupted(_state["signum"], f"stopped by {signal.Signals(_state['signum']).name}")
        yield
    finally:
        _state["depth"] -= 1


def check(what: str) -> None:
    """Raise ``StageInterrupted`` naming ``what`` was kept, if a stop was requested."""
    signum = _state["signum"]
    if signum is not None:
        raise StageInterrupted(signum, f"stopped by {signal.Signals(signum).name}; {what}")


__all__ = ["StageInterrupted", "check", "cooperative", "exit_code", "requested", "stop_on_signals"]
