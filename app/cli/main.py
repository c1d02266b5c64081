"""``tj``: the umbrella command. Stage commands are mounted from their own modules."""

from __future__ import annotations

import enum
import json
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from thinkjepa.app.cli import cache_cmd, data_cmd, eval_cmd, extract_cmd, train_cmd
from thinkjepa.app.cli.common import (
    EXIT_STALE,
    ConfigOpt,
    JsonOpt,
    ProgressOpt,
    SetOpt,
    VerboseOpt,
    cli_command,
    console,
    load,
    parse_shard,
    start_logging,
    typer_app,
)
from thinkjepa.app.pipeline import STAGE_NAMES

app = typer_app("ThinkJEPA: VLM-guided latent world models for 3D hand-trajectory forecasting.")
app.add_typer(data_cmd.app, name="data", help="Synthesise EgoDex-layout data and index datasets.")
app.add_typer(cache_cmd.app, name="cache", help="Inspect and verify feature caches.")
app.add_typer(extract_cmd.app, name="extract", help="Stage one: thinker hidden states into the VLM cache (= tj-extract).")
app.command("train", help="Stage two: train the predictor (= tj-train).", cls=train_cmd.ConfigAwareCommand)(train_cmd.train)
app.command("eval", help="Evaluate trained variants (= tj-eval).")(eval_cmd.main)
app.command("encode", help="Encode past/future windows with frozen V-JEPA2 into the JEPA cache.")(train_cmd.encode)

StageName = enum.Enum("StageName", {n: n for n in STAGE_NAMES}, type=str)
StagesArg = Annotated[
    list[StageName] | None,
    typer.Argument(help="Stages to consider (default: all, in order).", show_default=False),
]


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
        for problem in r.get("problems") or []:
            console.print(f"[yellow]problem:[/yellow] {r['stage']}: {problem}", highlight=False)
    for r in rows:
        if r["stale"] and r.get("next"):
            console.print(f"{r['stage']}: [bold]{r['next']}[/bold]")


@app.command()
@cli_command("tj status")
def status(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    json_out: JsonOpt = False,
    exit_code: Annotated[bool, typer.Option(
        "--exit-code", help=f"Exit {EXIT_STALE} when a stage is stale (0 when every stage is fresh), for scripts.",
    )] = False,
    verbose: VerboseOpt = False,
) -> None:
    """Which stages are stale, and why."""
    from thinkjepa.app import pipeline

    cfg = load(config, set_, verbose)
    rows = pipeline.status(cfg)
    if json_out:
        print(json.dumps(rows, indent=2, default=str))
    else:
        _print_status(rows)
    if exit_code and any(r["stale"] for r in rows):
        raise typer.Exit(EXIT_STALE)


@app.command()
@cli_command("tj run", long=True)
def run(
    stages: StagesArg = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    force: Annotated[bool, typer.Option(help="Run the named stages even if fresh (their stamps are replaced).")] = False,
    shard: Annotated[str | None, typer.Option(
        "--shard", help="Run only shard I/N (zero-based) of extract and encode; train and eval wait for every shard.",
    )] = None,
    allow_partial: Annotated[bool, typer.Option(
        help="Let train/eval run while shards are pending, on what is there (recorded in their stamp).",
    )] = False,
    scheduler: Annotated[str | None, typer.Option(
        help="Run the shards of extract and encode as tasks on a dask.distributed cluster: its scheduler "
             "address (tcp://host:8786), or local:N for N local worker processes. See docs/extract.md.",
    )] = None,
    shards: Annotated[int | None, typer.Option(
        help="With --scheduler: the shard count (default: the VLM store's, else one per worker).", min=1,
    )] = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", "-n", help="Say which stages would run and why; run and write nothing (no stamp, config or log).",
    )] = False,
    keep: Annotated[list[str] | None, typer.Option(
        "--keep", help="Keep this stage's output although stale (e.g. a harmless code change); its stamp records it.",
    )] = None,
    progress: ProgressOpt = True,
    json_out: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Rerun the stale stages, in order (index, extract, encode, train, eval)."""
    from thinkjepa.app import pipeline

    cfg = load(config, set_, verbose, capture=not dry_run)
    _progress_env(progress and not json_out)
    names = [s.value for s in stages] if stages else None
    reasons: dict[str, list[str]] = {}

    def on_event(stage: str, event: str, info: dict) -> None:
        if event == "would run":
            reasons[stage] = info["reasons"]
        if not json_out:
            _event_printer(stage, event, info)

    if scheduler is not None:
        if shard:
            raise typer.BadParameter("--shard and --scheduler exclude each other: the scheduler runs every shard")
        if dry_run or keep:
            raise typer.BadParameter("--dry-run and --keep work without --scheduler: run them with plain tj run")
        from thinkjepa.app import dask_stages

        done = dask_stages.run(cfg, names, scheduler, shards, force=force, allow_partial=allow_partial,
                               on_event=on_event)
    else:
        done = pipeline.run(cfg, names, force=force, on_event=on_event,
                            shard=parse_shard(shard) if shard else None, allow_partial=allow_partial,
                            dry_run=dry_run, keep=keep)
    if json_out:
        print(json.dumps({"dry_run": dry_run, "stages": [
            {"stage": s, "outcome": o, **({"reasons": reasons[s]} if s in reasons else {})} for s, o in done]}))


def _progress_env(enabled: bool) -> None:
    if not enabled:
        os.environ["THINKJEPA_PROGRESS"] = "0"


def _event_printer(stage: str, event: str, info: dict) -> None:
    if event == "fresh":
        console.print(f"[green]✓[/green] {stage}: fresh, skipped")
    elif event == "start":
        console.print(f"[bold cyan]▶ {stage}[/bold cyan] ({'; '.join(info.get('reasons', []))})")
    elif event == "kept":
        console.print(f"[yellow]=[/yellow] {stage}: kept on purpose ({'; '.join(info.get('reasons', []))})")
    elif event == "left":
        console.print(f"[yellow]…[/yellow] {stage}: left for later ({info.get('why')})")
    elif event == "would run":
        console.print(f"[bold cyan]would run {stage}[/bold cyan] ({'; '.join(info.get('reasons', []))})")
    elif event == "done":
        console.print(f"[green]✓[/green] {stage}: {json.dumps(info, default=str)[:300]}")


@app.command()
@cli_command("tj demo", long=True)
def demo(
    data_root: Annotated[Path | None, typer.Option(help="EgoDex-layout folder; default: synthesise one.")] = None,
    workdir: Annotated[Path, typer.Option(help="Folder for every output of the demo.")] = Path("runs/demo"),
    set_: SetOpt = None,
    progress: ProgressOpt = True,
    json_out: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """The whole pipeline with tiny local models, on synthetic data or an EgoDex folder."""
    from thinkjepa.app.demo import run_demo

    log = start_logging(workdir, verbose)
    _progress_env(progress and not json_out)
    report = run_demo(data_root=data_root, workdir=workdir, overrides=set_ or [],
                      on_event=None if json_out else _event_printer)
    if json_out:
        print(json.dumps({"report": str(report), "third_party_log": str(log)}))
        return
    console.print(f"[bold green]demo finished[/bold green]: report at {report}")
    if not verbose:
        console.print(f"third-party log (vLLM, torch, ...): {log}", highlight=False)


if __name__ == "__main__":
    app()
