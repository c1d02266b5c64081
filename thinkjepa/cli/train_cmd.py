"""``tj-train`` (also ``tj train``) and ``tj encode``: thin typer layers over
``thinkjepa.train.loop.run_training`` and ``thinkjepa.train.encode.run_encode``.

``tj-train`` is a callback-only app so the same options work standalone and when mounted
under ``tj`` (a one-command typer app would become ``tj train train`` there). Under
``accelerate launch -m thinkjepa.cli.train_cmd ...`` it trains on every process.
"""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer

from thinkjepa.cli.common import ConfigOpt, SetOpt, console, load, parse_shard

app = typer.Typer(
    help="Stage two: train the ThinkJEPA predictor (or a baseline/ablation variant) from the caches.",
    pretty_exceptions_show_locals=False,
)


@app.callback(invoke_without_command=True)
def train(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    variant: Annotated[
        Optional[str],
        typer.Option("--variant", "-v", help="thinkjepa, jepa_only, vlm_only or a key of `variants:` (default: model.variant)."),
    ] = None,
    resume: Annotated[bool, typer.Option(
        "--resume", help="Only continue last.pt: refuse if settings or data changed, or there is none.")] = False,
    restart: Annotated[bool, typer.Option(
        "--restart", help="Start afresh; existing checkpoints are kept as *.stale-*.pt.")] = False,
) -> None:
    """Train one variant; resumes from <train.out>/<variant>/last.pt when its settings and data
    match, starts afresh when the settings changed, and refuses when the data changed (saying
    what changed) unless --restart is given."""
    from thinkjepa.train.loop import TrainingStopped, run_training

    if resume and restart:
        console.print("[red]tj-train:[/red] --resume and --restart exclude each other")
        raise typer.Exit(2)
    cfg = load(config, set_)
    name = variant or cfg.model.variant
    try:
        run_dir = run_training(cfg, name, resume="resume" if resume else "restart" if restart else "auto")
    except TrainingStopped as e:
        console.print(f"[yellow]{e}[/yellow]")
        raise typer.Exit(143) from e
    except (FileNotFoundError, KeyError, ValueError) as e:
        console.print(f"[red]tj-train failed:[/red] {e}")
        raise typer.Exit(1) from e
    summary = json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").exists() else {}
    best = summary.get("best_val_ade")
    console.print(
        f"[green]trained {name}[/green]: {summary.get('steps')} steps, "
        f"best val ADE {best if best is None else f'{best:.4f}'} m -> {run_dir}"
    )


def encode(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    shard: Annotated[str, typer.Option("--shard", help="Zero-based shard I/N of the manifest's clips.")] = "0/1",
) -> None:
    """Encode past and future windows with frozen V-JEPA2 into the JEPA cache (resumable)."""
    from thinkjepa.train.encode import run_encode

    cfg = load(config, set_)
    try:
        summary = run_encode(cfg, shard=parse_shard(shard))
    except (FileNotFoundError, ValueError) as e:
        console.print(f"[red]encode failed:[/red] {e}")
        raise typer.Exit(1) from e
    console.print(
        f"encode {summary.part}: {len(summary.done)} encoded, {len(summary.skipped)} already done, "
        f"{len(summary.failed)} failed ({summary.seconds:.1f} s)"
    )
    for key, why in list(summary.failed.items())[:10]:
        console.print(f"  [red]{key}[/red]: {why}")
    # clips too short for any window are recorded but are not errors of this run
    if any("@" in key for key in summary.failed):
        raise typer.Exit(1)


if __name__ == "__main__":
    app()
