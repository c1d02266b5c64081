"""What the sharded, resumable stages (extract, encode) share: their summary, how a failure
is worded, their progress bar, and how they read the manifest."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from thinkjepa.config import PipelineConfig
from thinkjepa.logs import project_console


@dataclass
class ShardSummary:
    """What one run over a shard did. ``failed`` maps key -> reason (a clip id for a clip
    that yields no window)."""

    part: str
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed


def failure_reason(stage: str, exc: BaseException) -> str:
    """One line naming the step that failed and why (kept in the cache's failure record)."""
    msg = " ".join(str(exc).split()) or "(no message)"
    return f"{stage}: {type(exc).__name__}: {msg}"[:2000]


def progress_bar(enabled: bool, label: str) -> Progress:
    """A rich bar on stderr with a free ``status`` field (failures so far, loss, ...)."""
    return Progress(
        TextColumn(f"[bold]{label}[/bold]"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"), TimeElapsedColumn(), TimeRemainingColumn(),
        # THINKJEPA_PROGRESS=0: `tj run` / `tj demo --no-progress` switch every stage's bar off
        console=project_console(), disable=not enabled or os.environ.get("THINKJEPA_PROGRESS") == "0",
    )


def manifest_rows(cfg: PipelineConfig) -> list[dict[str, Any]]:
    """The clips manifest's rows in clip-id order, or a message saying how to build it."""
    from thinkjepa.data.manifest import read_manifest

    path = cfg.path(cfg.data.manifest)
    if not path.exists():
        raise FileNotFoundError(f"clips manifest {path} not found: build it first with `tj data index ROOT --out {path}`")
    return sorted(read_manifest(path).to_pylist(), key=lambda r: r["clip_id"])
