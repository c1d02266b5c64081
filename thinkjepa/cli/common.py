"""Options every stage command shares: ``--config FILE`` and repeated ``--set key=value``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from thinkjepa.config import PipelineConfig, load_config

# vLLM logs every engine setting at INFO; the pipeline's own progress is what users watch.
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")

console = Console(stderr=True)

ConfigOpt = Annotated[
    Optional[Path],
    typer.Option("--config", "-c", help="Pipeline YAML (default: ./pipelines.yaml if present)."),
]
SetOpt = Annotated[
    Optional[list[str]],
    typer.Option("--set", "-s", help="Override a config value, e.g. --set thinker.backend=transformers (repeatable)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")]


def load(config: Path | None, sets: list[str] | None) -> PipelineConfig:
    """Load the config or exit with a message that says what to fix."""
    try:
        return load_config(config, sets or [])
    except Exception as e:  # pydantic / yaml / missing file: all are user errors here
        console.print(f"[red]config error:[/red] {e}")
        raise typer.Exit(2) from e


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
