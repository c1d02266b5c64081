"""``tj``: the umbrella command. Stage commands are mounted from their own modules."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from thinkjepa.cli import cache_cmd, data_cmd, eval_cmd, extract_cmd, train_cmd
from thinkjepa.cli.common import ConfigOpt, JsonOpt, SetOpt, console, load, parse_shard

app = typer.Typer(
    help="ThinkJEPA: VLM-guided latent world models for 3D hand-trajectory forecasting.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.add_typer(data_cmd.app, name="data", help="Synthesise EgoDex-layout data and index datasets.")
app.add_typer(cache_cmd.app, name="cache", help="Inspect and verify feature caches.")
app.add_typer(extract_cmd.app, name="extract", help="Stage one: thinker hidden states into the VLM cache (= tj-extract).")
app.add_typer(train_cmd.app, name="train", help="Stage two: train the predictor (= tj-train).")
app.add_typer(eval_cmd.app, name="eval", help="Evaluate trained variants (= tj-eval).")
app.command("encode", help="Encode past/future windows with frozen V-JEPA2 into the JEPA cache.")(train_cmd.encode)


def _print_status(rows: list[dict]) -> None:
    table = Table(title="pipeline status")
    for col in ("stage", "state", "done", "stale", "failed", "pending", "why", "last run"):
        table.add_column(col, justify="right" if col in ("done", "stale", "failed", "pending") else "left")
    for r in rows:
        state = "[yellow]stale[/yellow]" if r["stale"] else "[green]fresh[/green]"
        w = r.get("windows") or {}
        counts = [str(w[k]) if w else "-" for k in ("done", "stale", "failed", "pending")]
        table.add_row(r["stage"], state, *counts, "; ".join(r["reasons"]) or "-", r["last_run"] or "-")
    console.print(table)
    for r in rows:
        if r["stale"] and r.get("next"):
            console.print(f"{r['stage']}: [bold]{r['next']}[/bold]")


@app.command()
def status(config: ConfigOpt = None, set_: SetOpt = None, json_out: JsonOpt = False) -> None:
    """Which stages are stale, and why."""
    from thinkjepa import pipeline

    cfg = load(config, set_)
    rows = pipeline.status(cfg)
    if json_out:
        print(json.dumps(rows, indent=2, default=str))
    else:
        _print_status(rows)


@app.command()
def run(
    stages: Annotated[Optional[list[str]], typer.Argument(help="Stages to consider (default: all, in order).")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    force: Annotated[bool, typer.Option(help="Run the named stages even if fresh (their stamps are replaced).")] = False,
    shard: Annotated[Optional[str], typer.Option(
        "--shard", help="Run only shard I/N (zero-based) of extract and encode; train and eval wait for every shard.",
    )] = None,
    allow_partial: Annotated[bool, typer.Option(
        help="Let train/eval run while shards are pending, on what is there (recorded in their stamp).",
    )] = False,
) -> None:
    """Rerun the stale stages, in order (index, extract, encode, train, eval)."""
    from thinkjepa import pipeline

    cfg = load(config, set_)
    try:
        pipeline.run(cfg, stages, force=force, on_event=_event_printer,
                     shard=parse_shard(shard) if shard else None, allow_partial=allow_partial)
    except (RuntimeError, ValueError, KeyError, FileNotFoundError) as e:
        console.print(f"[red]tj run failed:[/red] {e}")
        raise typer.Exit(1) from e


def _event_printer(stage: str, event: str, info: dict) -> None:
    if event == "fresh":
        console.print(f"[green]✓[/green] {stage}: fresh, skipped")
    elif event == "start":
        console.print(f"[bold cyan]▶ {stage}[/bold cyan] ({'; '.join(info.get('reasons', []))})")
    elif event == "left":
        console.print(f"[yellow]…[/yellow] {stage}: left for later ({info.get('why')})")
    elif event == "done":
        console.print(f"[green]✓[/green] {stage}: {json.dumps(info, default=str)[:300]}")


@app.command()
def demo(
    data_root: Annotated[Optional[Path], typer.Option(help="EgoDex-layout folder; default: synthesise one.")] = None,
    workdir: Annotated[Path, typer.Option(help="Folder for every output of the demo.")] = Path("runs/demo"),
    set_: SetOpt = None,
) -> None:
    """The whole pipeline with tiny local models, on synthetic data or an EgoDex folder."""
    from thinkjepa.demo import run_demo

    try:
        report = run_demo(data_root=data_root, workdir=workdir, overrides=set_ or [], on_event=_event_printer)
    except (RuntimeError, ValueError, FileNotFoundError) as e:
        console.print(f"[red]demo failed:[/red] {e}")
        raise typer.Exit(1) from e
    console.print(f"[bold green]demo finished[/bold green]: report at {report}")


if __name__ == "__main__":
    app()
