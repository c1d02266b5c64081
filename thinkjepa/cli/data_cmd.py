"""``tj data``: synthesise an EgoDex-layout dataset, index a dataset into the clips manifest."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from thinkjepa.cli.common import ConfigOpt, JsonOpt, SetOpt, console, load

app = typer.Typer(
    help="Synthesise EgoDex-layout data and index datasets into the clips manifest.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)


@app.command()
def synth(
    out: Annotated[Path, typer.Argument(help="Folder to write <task>/<n>.mp4|.hdf5 into.")],
    episodes: Annotated[int, typer.Option("--episodes", "-n", min=1, help="Number of episodes.")] = 12,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same arrays).")] = 0,
    frames: Annotated[int, typer.Option("--frames", min=8, help="Frames per episode.")] = 64,
    size: Annotated[int, typer.Option(help="Square frame size in pixels (even).")] = 128,
    tasks: Annotated[Optional[int], typer.Option(help="Task folders, 1-4 (default: one per 4 episodes).")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Synthetic EgoDex episodes whose future hand motion depends on an early visual cue."""
    from thinkjepa.data.synth import synthesize_dataset

    try:
        labels = synthesize_dataset(
            out, episodes, seed=seed, n_frames=frames, size=size, tasks=tasks, progress=not json_out
        )
    except ValueError as e:
        console.print(f"[red]synth failed:[/red] {e}")
        raise typer.Exit(2) from e
    summary = {
        "root": str(out),
        "episodes": len(labels["episodes"]),
        "tasks": labels["tasks"],
        "n_frames": labels["n_frames"],
        "size": [labels["height"], labels["width"]],
        "cue_frames": labels["cue_frames"],
        "reach_start": labels["reach_start"],
    }
    if json_out:
        print(json.dumps(summary))
    else:
        console.print(
            f"[green]wrote {summary['episodes']} episodes[/green] in {len(summary['tasks'])} task folder(s) "
            f"under {out} ({labels['n_frames']} frames of {labels['width']}x{labels['height']}; "
            f"cue in frames {labels['cue_frames'][0]}-{labels['cue_frames'][1] - 1}, reach from frame {labels['reach_start']})"
        )


@app.command()
def index(
    root: Annotated[Optional[Path], typer.Argument(help="EgoDex-layout root (default: data.root of the config).")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Manifest file (default: data.manifest).")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Episodes checked in parallel.")] = 1,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Validate every episode under ROOT and write the clips manifest (Parquet).

    Unusable episodes are listed with the reason and left out; exit code 1 only if none is usable.
    """
    from thinkjepa.data.manifest import build_manifest

    cfg = load(config, set_)
    root = root or (Path(cfg.data.root) if cfg.data.root else None)
    if root is None:
        console.print("[red]no dataset root:[/red] pass ROOT or set data.root (--set data.root=DIR)")
        raise typer.Exit(2)
    out = out or cfg.path(cfg.data.manifest)
    try:
        table, problems = build_manifest(root, out, cfg.data, cfg.sampling, workers=workers, progress=not json_out)
    except (FileNotFoundError, ValueError) as e:
        console.print(f"[red]index failed:[/red] {e}")
        raise typer.Exit(2) from e
    rows = table.to_pylist()
    if json_out:
        print(json.dumps({"manifest": str(out), "clips": rows, "problems": [p.as_dict() for p in problems]}))
    else:
        _print_summary(out, rows, problems)
    if not rows:
        raise typer.Exit(1)


def _print_summary(out: Path, rows: list[dict], problems: list) -> None:
    per_split = Counter(r["split"] for r in rows)
    tasks: dict[str, set[str]] = {}
    for r in rows:
        tasks.setdefault(r["split"], set()).add(r["task"])
    table = Table(title=f"clips manifest: {out}")
    for col in ("split", "clips", "task folders"):
        table.add_column(col)
    for split in ("train", "val", "test"):
        names = sorted(tasks.get(split, ()))
        shown = ", ".join(names[:6]) + (f" (+{len(names) - 6})" if len(names) > 6 else "")
        table.add_row(split, str(per_split.get(split, 0)), shown or "-")
    console.print(table)
    if problems:
        ptable = Table(title=f"problems ({sum(p.severity == 'error' for p in problems)} episode(s) left out)")
        for col in ("clip", "severity", "reason"):
            ptable.add_column(col, overflow="fold")
        for p in problems:
            colour = "red" if p.severity == "error" else "yellow"
            ptable.add_row(p.clip_id or "(dataset)", f"[{colour}]{p.severity}[/{colour}]", p.reason)
        console.print(ptable)
