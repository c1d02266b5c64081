"""``tj data``: synthesise an EgoDex-layout dataset, index a dataset into the clips manifest."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from thinkjepa.app.cli.common import (
    EXIT_FAILED,
    ConfigOpt,
    JsonOpt,
    NoCaptureVerboseOpt,
    ProgressOpt,
    SetOpt,
    UsageError,
    VerboseOpt,
    WorkFailed,
    cli_command,
    console,
    load,
    typer_app,
)

app = typer_app("Synthesise EgoDex-layout data and index datasets into the clips manifest.")


@app.command()
@cli_command("tj data synth")
def synth(
    out: Annotated[Path, typer.Argument(help="Folder to write <task>/<n>.mp4|.hdf5 into.")],
    episodes: Annotated[int, typer.Option("--episodes", "-n", min=1, help="Number of episodes (v1).")] = 12,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same arrays).")] = 0,
    frames: Annotated[int | None, typer.Option("--frames", min=8, help="Frames per episode (default: 64 for v1, 48 for v3).")] = None,
    size: Annotated[int | None, typer.Option(help="Square frame size in pixels, even (default: 128 for v1, 64 for v3).")] = None,
    tasks: Annotated[int | None, typer.Option(help="Task folders, 1-4 (v1; default: one per 4 episodes).")] = None,
    generator: Annotated[str, typer.Option(help="v1 (the first toy) or rollout_v3 (thinkjepa/data/synth_v3.py).")] = "v1",
    mode: Annotated[str, typer.Option(help="rollout_v3: cued, shuffled, absent or fixed_event.")] = "cued",
    scenes: Annotated[int, typer.Option(min=1, help="rollout_v3: scene (task) folders.")] = 24,
    episodes_per_scene: Annotated[int, typer.Option(min=1, help="rollout_v3: episodes per scene.")] = 8,
    force: Annotated[bool, typer.Option(help="Write even into a folder that holds episodes it did not make.")] = False,
    json_out: JsonOpt = False,
    progress: ProgressOpt = True,
    verbose: NoCaptureVerboseOpt = False,
) -> None:
    """Synthetic EgoDex episodes whose future hand motion depends on an early visual cue."""
    show = progress and not json_out
    from thinkjepa.data.synth import foreign_episodes

    foreign = foreign_episodes(out)
    if foreign and not force:
        raise UsageError(f"{out} already holds {len(foreign)} episode(s) that synth did not write (e.g. {foreign[0]}): "
                         "synthetic episodes would overwrite or mix with a real dataset; pick an empty folder, "
                         "or pass --force")
    try:
        if generator == "v1":
            from thinkjepa.data.synth import synthesize_dataset

            labels = synthesize_dataset(out, episodes, seed=seed, n_frames=frames or 64, size=size or 128, tasks=tasks, progress=show)
            summary = {"cue_frames": labels["cue_frames"], "reach_start": labels["reach_start"]}
            detail = (f"cue in frames {labels['cue_frames'][0]}-{labels['cue_frames'][1] - 1}, "
                      f"reach from frame {labels['reach_start']}")
        elif generator == "rollout_v3":
            from thinkjepa.data.synth_v3 import synthesize_rollout_v3

            labels = synthesize_rollout_v3(out, scenes=scenes, episodes_per_scene=episodes_per_scene, mode=mode,  # type: ignore[arg-type]
                                           seed=seed, n_frames=frames or 48, size=size or 64, progress=show)
            summary = {"mode": mode, "timeline": labels["timeline"]}
            tl = labels["timeline"]
            detail = (f"mode {mode}; cue card in frames 0-{tl['cue_end'] - 1}, forecast times {tl['ts']}, "
                      f"event from frame {tl['first_changed_frame']} (rollout steps {sorted(tl['event_step'].values())})")
        else:
            raise UsageError(f"--generator must be v1 or rollout_v3, got {generator!r}")
    except ValueError as e:  # the arguments do not make a dataset
        raise UsageError(str(e)) from e
    summary = {
        "root": str(out),
        "generator": generator,
        "episodes": len(labels["episodes"]),
        "tasks": labels["tasks"],
        "n_frames": labels["n_frames"],
        "size": [labels["height"], labels["width"]],
        **summary,
    }
    if json_out:
        print(json.dumps(summary))
    else:
        console.print(
            f"[green]wrote {summary['episodes']} episodes[/green] in {len(summary['tasks'])} task folder(s) "
            f"under {out} ({labels['n_frames']} frames of {labels['width']}x{labels['height']}; {detail})"
        )


@app.command()
@cli_command("tj data index")
def index(
    root: Annotated[Path | None, typer.Argument(help="EgoDex-layout root (default: data.root of the config).")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Manifest file (default: data.manifest).")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Parallel workers (threads or processes) on this machine.")] = 1,
    scheduler: Annotated[
        str,
        typer.Option(help="dask scheduler: processes, threads, sync, or a dask.distributed address "
                          "(tcp://HOST:8786) whose workers see the same paths. Threads do not speed the "
                          "index up (h5py holds one global lock); processes do."),
    ] = "processes",
    full: Annotated[bool, typer.Option("--full", help="Re-read every episode (default: only new or changed files).")] = False,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    json_out: JsonOpt = False,
    progress: ProgressOpt = True,
    verbose: VerboseOpt = False,
) -> None:
    """Validate every episode under ROOT and write the clips manifest (Parquet).

    Unusable episodes are listed with the reason and left out. Exit 1 if none is usable,
    2 if ROOT is not an EgoDex-layout folder.
    """
    from thinkjepa.data.manifest import build_manifest

    cfg = load(config, set_, verbose)
    root = root or (Path(cfg.data.root) if cfg.data.root else None)
    if root is None:
        raise UsageError("no dataset root: pass ROOT or set data.root (--set data.root=DIR)")
    out = out or cfg.path(cfg.data.manifest)
    table, problems = build_manifest(root, out, cfg.data, cfg.sampling, workers=workers, scheduler=scheduler,
                                     progress=progress and not json_out, incremental=not full)
    rows = table.to_pylist()
    if json_out:
        print(json.dumps({"manifest": str(out), "clips": rows, "problems": [p.as_dict() for p in problems]}))
    else:
        _print_summary(out, rows, problems)
    if not rows:
        if json_out:  # the JSON above already lists every problem
            raise typer.Exit(EXIT_FAILED)
        errors = [p for p in problems if p.severity == "error"]
        raise WorkFailed(
            f"no usable episode under {root}: all {len(errors)} found are left out (reasons above; the most "
            f"common: {_most_common_reason(errors)}). Fix or replace them and rerun `tj data index {root}`"
        )


def _most_common_reason(errors: list) -> str:
    if not errors:
        return "none"
    reason, n = Counter(re.sub(r"\d+", "N", p.reason) for p in errors).most_common(1)[0]
    return f"{reason!r} ({n}x)"


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
