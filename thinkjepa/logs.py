"""Quiet by default: the console shows the project's own lines, third-party output goes to a file.

``capture_third_party(workdir)`` sends everything that is not ours to
``<workdir>/logs/third_party.log``: Python logging of every library (vLLM, transformers,
torch, dask, ...), ``warnings.warn`` raised outside the project, and output written straight to
file descriptors 1 and 2 (C++ and Triton messages, engine subprocesses, which inherit the
descriptors, and Python streams handed out before or after: ``sys.stderr`` keeps writing
to descriptor 2). The project's own output reaches the terminal through duplicates of the
original descriptors: ``sys.stdout`` (tables, JSON) and ``STDERR``, the stream the project's
consoles and progress bars write to (``project_console``). ``verbose=True`` leaves the
descriptors alone and shows the third-party logs live (and still writes the file).

Where a warning has a cause that is ours, the cause is fixed instead (e.g. the tiny
checkpoints are saved in the dtype the engine loads; see thinkjepa.tiny).
"""

from __future__ import annotations

import io
import logging
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

LOG_NAME = "third_party.log"
PROJECT_LOGGER = "thinkjepa"
_PROJECT_DIRS = tuple(
    str(Path(__file__).resolve().parent.parent / d) + os.sep
    for d in ("thinkjepa", "app", "cache_schema", "extract", "train", "evaluate")
) + (str(Path(__file__).resolve().parent) + os.sep,)


def log_path(workdir: str | Path) -> Path:
    return Path(workdir) / "logs" / LOG_NAME


def _is_ours(filename: str) -> bool:
    try:
        resolved = str(Path(filename).resolve())
    except OSError:
        return False
    return resolved.startswith(_PROJECT_DIRS) or "/thinkjepa/" in resolved


class _TerminalStderr(io.TextIOBase):
    """The terminal's stderr while third-party output is captured, else ``sys.stderr``."""

    def _target(self):
        return _active.term_err if _active is not None and _active.term_err is not None else sys.stderr

    def write(self, s: str) -> int:
        return self._target().write(s)

    def flush(self) -> None:
        self._target().flush()

    def isatty(self) -> bool:
        return self._target().isatty()

    def fileno(self) -> int:
        return self._target().fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._target(), "encoding", "utf-8")


STDERR = _TerminalStderr()
"""Where the project's own stderr lines go (the terminal, also while capturing)."""


def project_console():
    """A rich Console on ``STDERR``: the project's progress bars and messages."""
    from rich.console import Console

    return Console(file=STDERR)


@dataclass
class _Capture:
    path: Path
    handler: logging.Handler
    saved_fds: tuple[int, int] | None
    saved_stdout: object
    term_err: object | None
    saved_showwarning: object
    saved_level: int
    saved_handlers: list[logging.Handler]


_active: _Capture | None = None


def _has_real_fds() -> bool:
    try:
        return sys.stdout.fileno() == 1 and sys.stderr.fileno() == 2
    except (AttributeError, ValueError, io.UnsupportedOperation):
        return False  # e.g. typer's CliRunner or pytest capture: Python-level capture only


def capture_third_party(workdir: str | Path, verbose: bool = False) -> Path:
    """Start routing third-party output to ``<workdir>/logs/third_party.log``; returns its path.
    Idempotent: a second call while active keeps the first file."""
    global _active
    if _active is not None:
        return _active.path
    path = log_path(workdir)
    path.parent.mkdir(parents=True, exist_ok=True)
    log_file = open(path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115 - lives until stop_capture
    log_file.write(f"--- {' '.join(sys.argv)} (pid {os.getpid()})\n")
    # vLLM installs its own stdout handler unless told not to; then it logs through ours
    os.environ["VLLM_CONFIGURE_LOGGING"] = "0"
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "info" if verbose else "warning")
    if not verbose:  # tqdm bars of save/load steps (they hold the terminal's stderr object)
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

    # Full capture only in a real, quiet process. Under a test runner (no real descriptors) or
    # with --verbose the log file is added beside the existing handlers and warnings, so
    # pytest's caplog / pytest.warns and the live output keep working.
    full = not verbose and _has_real_fds()
    root = logging.getLogger()
    saved = (root.level, list(root.handlers))
    handler = logging.StreamHandler(log_file)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.handlers = [handler] if full else [*root.handlers, handler]
    if verbose and not any(getattr(h, "stream", None) in (sys.stderr, STDERR) for h in saved[1]):
        live = logging.StreamHandler(STDERR)
        live.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        root.addHandler(live)
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    for name in ("vllm", "transformers", "torch", "distributed", "accelerate"):
        lg = logging.getLogger(name)
        lg.handlers = [h for h in lg.handlers if isinstance(h, logging.FileHandler)]
        lg.propagate = True

    saved_showwarning = warnings.showwarning

    def showwarning(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001 - stdlib signature
        if _is_ours(filename):
            STDERR.write(f"warning: {message}\n")
        else:
            log_file.write(warnings.formatwarning(message, category, filename, lineno, line))

    saved_stdout = sys.stdout
    saved_fds = term_err = None
    if full:
        sys.stdout.flush()
        sys.stderr.flush()
        saved_fds = (os.dup(1), os.dup(2))
        # descriptors 1 and 2 (and everything that writes to them) now lead to the log;
        # the project's output goes to duplicates of the terminal's
        sys.stdout = os.fdopen(os.dup(saved_fds[0]), "w", buffering=1, encoding="utf-8", errors="replace")
        term_err = os.fdopen(os.dup(saved_fds[1]), "w", buffering=1, encoding="utf-8", errors="replace")
        os.dup2(log_file.fileno(), 1)
        os.dup2(log_file.fileno(), 2)
        warnings.showwarning = showwarning
    _active = _Capture(path, handler, saved_fds, saved_stdout, term_err, saved_showwarning, *saved)
    return path


def stop_capture() -> None:
    """Undo ``capture_third_party`` (restores descriptors, streams, logging and warnings)."""
    global _active
    cap, _active = _active, None
    if cap is None:
        return
    root = logging.getLogger()
    root.handlers = cap.saved_handlers
    root.setLevel(cap.saved_level)
    warnings.showwarning = cap.saved_showwarning
    if cap.saved_fds is not None:
        sys.stdout.flush()
        cap.term_err.flush()
        sys.stderr.flush()
        os.dup2(cap.saved_fds[0], 1)
        os.dup2(cap.saved_fds[1], 2)
        for fd in cap.saved_fds:
            os.close(fd)
        sys.stdout.close()
        cap.term_err.close()
    sys.stdout = cap.saved_stdout
    cap.handler.stream.close()


def active_log() -> Path | None:
    """The third-party log being written, if any."""
    return _active.path if _active is not None else None
