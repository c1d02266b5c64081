"""What every command shares: ``--config FILE``, repeated ``--set key=value``, ``--json``,
``--verbose``, and the one mapping from the project's errors to exit codes.

Exit codes, the same for every command (``cli_command``):

- 0: done.
- 1: the work ran and failed (entries failed, nothing usable in the data, a stage error).
- 2: usage or config error: a bad option or config value, a missing input (file, folder,
  manifest, cache) the command needs before it can start.
- 3: ``tj status --exit-code`` only: something is stale (the counterpart of ``git diff
  --exit-code`` and ``dvc status``; distinct from 1 so a script can tell "work to do" from
  "broken").
- 130: interrupted (Ctrl-C); 143 when training was stopped by SIGTERM (checkpoint written).
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import click
import typer
from rich.console import Console

from thinkjepa.config import PipelineConfig, load_config

# vLLM logs every engine setting at INFO; the pipeline's own progress is what users watch.
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")

from thinkjepa.logs import STDERR  # noqa: E402 - after the env default above

console = Console(file=STDERR)

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_STALE, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 2, 3, 130, 143


class UsageError(ValueError):
    """The command cannot start as asked (exit 2): say what to change."""


class WorkFailed(RuntimeError):
    """The command ran and its work failed (exit 1)."""


ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="Pipeline YAML (default: ./pipelines.yaml if present)."),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="Override a config value, e.g. --set thinker.backend=transformers (repeatable)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")]
ProgressOpt = Annotated[bool, typer.Option("--progress/--no-progress", help="Show progress bars (stderr).")]
VerboseOpt = Annotated[
    bool,
    typer.Option("--verbose", "-v", help="Show third-party logs (vLLM, torch, ...) live; they always go to <workdir>/logs."),
]

NoCaptureVerboseOpt = Annotated[
    bool,
    typer.Option("--verbose", "-v", help="Accepted by every command; this one captures no third-party output "
                                         "(it reads no config, so it has no workdir): what libraries print shows live."),
]


def version_text(prog: str) -> str:
    import platform
    from importlib.metadata import PackageNotFoundError, version

    try:
        ours = version("thinkjepa")
    except PackageNotFoundError:  # run from a tree that was never installed
        ours = "unknown (not installed)"
    return f"{prog} {ours} (thinkjepa, Python {platform.python_version()})"


def _version_callback(ctx: typer.Context, value: bool) -> None:
    if value:
        typer.echo(version_text(ctx.find_root().info_name or "thinkjepa"))
        raise typer.Exit(EXIT_OK)


VersionOpt = Annotated[
    bool,
    typer.Option("--version", callback=_version_callback, is_eager=True, expose_value=True,
                 help="Print the version and exit."),
]


def typer_app(help: str, *, single_command: bool = False) -> typer.Typer:
    """The Typer app of one console script or command group. A single-command script (tj-train,
    tj-eval) takes its options at the top level, so it shows no completion commands and runs
    without arguments (it declares ``VersionOpt`` itself); a group prints its help when called
    bare and takes ``--version`` before its command."""
    extra: dict[str, Any] = {"add_completion": False} if single_command else {"no_args_is_help": True}
    app = typer.Typer(help=help, pretty_exceptions_show_locals=False, **extra)
    if not single_command:
        @app.callback()
        def _root(version: VersionOpt = False) -> None:
            pass
    return app


def exit_code_for(exc: BaseException) -> int | None:
    """The exit code for ``exc``; None for an exception that is a bug (shown with its traceback)."""
    import pydantic
    import yaml

    from thinkjepa.cache_schema import SchemaMismatchError
    from thinkjepa.data.manifest import NoEpisodesError

    if isinstance(exc, KeyboardInterrupt):
        from thinkjepa.interrupts import exit_code

        return exit_code(getattr(exc, "signum", None))
    if type(exc).__name__ == "TrainingStopped":  # imported lazily: train.loop pulls in torch
        return EXIT_TERMINATED if "SIGTERM" in str(exc) else EXIT_INTERRUPTED
    usage = (UsageError, FileNotFoundError, NotADirectoryError, NoEpisodesError, SchemaMismatchError,
             pydantic.ValidationError, yaml.YAMLError, click.BadParameter)
    if isinstance(exc, usage):
        return EXIT_USAGE
    if isinstance(exc, (WorkFailed, RuntimeError, ValueError, KeyError, OSError)):
        return EXIT_FAILED
    return None


F = TypeVar("F", bound=Callable[..., Any])


def cli_command(name: str, *, long: bool = False) -> Callable[[F], F]:
    """Run a command body under the project's exit codes: errors print one line naming the
    command and the cause (and, with ``--json``, a JSON object on stdout), then exit with
    ``exit_code_for``. Third-party log capture started by ``load`` ends here. ``long``: a
    command that runs stages; SIGINT / SIGTERM stop it cleanly (``thinkjepa.interrupts``,
    installed before any engine starts), exit 130 / 143."""

    def deco(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            from contextlib import nullcontext

            from thinkjepa import interrupts, logs

            try:
                with interrupts.stop_on_signals() if long else nullcontext():
                    return fn(*args, **kwargs)
            except (typer.Exit, typer.Abort, click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
                raise
            except (Exception, KeyboardInterrupt) as e:  # noqa: BLE001 - mapped or re-raised below
                code = exit_code_for(e)
                if code is None:
                    raise
                _report(name, e, code, kwargs.get("json_out", False), logs.active_log())
                raise typer.Exit(code) from e
            finally:
                logs.stop_capture()

        wrapper.cli_name = name  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return deco


def disk_full_message(exc: BaseException, fallback: Path | None = None) -> str | None:
    """For a full disk (ENOSPC / EDQUOT anywhere in ``exc``'s chain): the path, the free space
    and what to do; None for any other error."""
    import errno
    import shutil

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            path = Path(os.fsdecode(seen.filename)) if seen.filename else (fallback or Path.cwd())
            probe = path
            while not probe.exists() and probe != probe.parent:
                probe = probe.parent
            free = shutil.disk_usage(probe).free
            return (f"no space left on the device writing {path} ({free / 2**20:.1f} MiB free on that file "
                    f"system): free space there, or point workdir and the caches at a larger disk, then rerun "
                    "the same command (committed work is kept)")
        seen = seen.__cause__ or seen.__context__
    return None


def _report(name: str, exc: BaseException, code: int, json_out: bool, log: Path | None) -> None:
    message = " ".join(str(exc).split()) or type(exc).__name__
    message = disk_full_message(exc, log.parent.parent if log is not None else None) or message
    if isinstance(exc, KeyboardInterrupt) and "rerun" not in message:
        message = f"{message if str(exc) else 'interrupted'}; what was committed is kept, rerun the same command to resume"
    kind = {EXIT_USAGE: "cannot start", EXIT_FAILED: "failed"}.get(code, "stopped")
    colour = "yellow" if code in (EXIT_INTERRUPTED, EXIT_TERMINATED) else "red"
    console.print(f"[{colour}]{name} {kind}:[/{colour}] {message}", highlight=False)
    if log is not None and code == EXIT_FAILED:
        console.print(f"third-party log: {log}", highlight=False)
    if json_out:
        print(json.dumps({"ok": False, "exit_code": code, "error": message}))


def load(config: Path | None, sets: list[str] | None, verbose: bool = False, *, capture: bool = True) -> PipelineConfig:
    """Load the config (a mistake in it is a ``UsageError``) and start capturing third-party
    output into ``<workdir>/logs`` (``verbose``: also shown live; ``capture`` False: not
    captured, nothing written, for commands that promise to write nothing)."""
    try:
        cfg = load_config(config, sets or [])
    except Exception as e:  # pydantic / yaml / missing file: all are user errors here
        raise UsageError(f"config error: {e}") from e
    if capture:
        start_logging(cfg.path("{workdir}"), verbose)
    return cfg


def start_logging(workdir: Path, verbose: bool = False) -> Path:
    from thinkjepa import logs

    return logs.capture_third_party(workdir, verbose=verbose)


def parse_shard(spec: str) -> tuple[int, int]:
    """``I/N`` with 0 <= I < N."""
    try:
        i_s, n_s = spec.split("/")
        i, n = int(i_s), int(n_s)
    except ValueError as e:
        raise typer.BadParameter(f"shard {spec!r} is not of the form I/N, e.g. 0/4") from e
    if n < 1 or not 0 <= i < n:
        raise typer.BadParameter(f"shard {spec!r}: need 0 <= I < N")
    return i, n


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str))
