"""``tj-extract``: stage one, thinker hidden states into the VLM cache (a thin layer over
``thinkjepa.extract.runner`` and ``thinkjepa.extract.status``)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from thinkjepa.app.cli.common import (
    EXIT_FAILED,
    ConfigOpt,
    JsonOpt,
    ProgressOpt,
    SetOpt,
    UsageError,
    VerboseOpt,
    WorkFailed,
    cli_command,
    console,
    load,
    parse_shard,
    typer_app,
)

app = typer_app("Stage one: run the Qwen3-VL Thinking thinker over the manifest and store its hidden states.")


@app.command()
@cli_command("tj-extract run", long=True)
def run(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    shard: Annotated[
        str, typer.Option("--shard", help="Shard I/N to extract, zero-based (0 <= I < N); one process per GPU.")
    ] = "0/1",
    progress: ProgressOpt = True,
    json_out: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Extract shard I of N of the manifest into thinker.cache (resumable).

    Windows already committed with the same extraction fingerprint are skipped; failed, stale and pending ones are (re)done. Exits 1 if any window failed (reasons in `tj-extract status`).
    """
    from thinkjepa.extract.prompt import validate_template
    from thinkjepa.extract.runner import run_shard

    i, n = parse_shard(shard)
    cfg = load(config, set_, verbose)
    try:
        validate_template(cfg.thinker.prompt_template)
    except ValueError as e:  # a config value, found before any engine starts
        raise UsageError(f"config error: {e}") from e
    summary = run_shard(cfg, (i, n), progress=progress and not json_out)
    if json_out:
        print(json.dumps({"part": summary.part, "done": summary.done, "skipped": summary.skipped,
                          "failed": summary.failed, "seconds": summary.seconds}))
        if summary.failed:
            raise typer.Exit(EXIT_FAILED)
        return
    if not summary.done and not summary.skipped and not summary.failed:
        console.print(f"[yellow]shard {i}/{n} holds no clip of the manifest[/yellow] (clips are assigned by a hash of their id)")
    console.print(
        f"{summary.part}: [green]{len(summary.done)} extracted[/green], {len(summary.skipped)} already done, "
        f"{'[red]' if summary.failed else ''}{len(summary.failed)} failed{'[/red]' if summary.failed else ''} "
        f"({summary.seconds:.1f} s)"
    )
    if summary.failed:
        for key, reason in list(summary.failed.items())[:10]:
            console.print(f"  [red]✗[/red] {key}: {reason}")
        if len(summary.failed) > 10:
            console.print(f"  ... and {len(summary.failed) - 10} more")
        raise WorkFailed(
            f"{len(summary.failed)} window(s) failed; failures are recorded in the store. See `tj-extract status` "
            f"for every reason; fix the input (or leave it) and rerun `tj-extract run --shard {i}/{n}` with the "
            "same settings: it retries the failed entries and skips the rest."
        )


@app.command()
@cli_command("tj-extract status")
def status(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    json_out: JsonOpt = False,
    shards: Annotated[
        int | None, typer.Option(help="Group by this shard count (default: the count the store was written with).")
    ] = None,
    verbose: VerboseOpt = False,
) -> None:
    """Per shard: done / stale / failed / pending windows, failure reasons, stale entries.

    Reads the manifest, the config and the store only; starts no engine.
    """
    from thinkjepa.extract.status import extraction_status

    cfg = load(config, set_, verbose)
    st = extraction_status(cfg, shards=shards)
    if json_out:
        print(json.dumps(st, indent=2))
        return
    table = Table(title=f"extraction status: {st['cache']}")
    for col in ("shard", "clips", "windows", "done", "stale", "failed", "pending"):
        table.add_column(col, justify="left" if col == "shard" else "right")
    for r in st["shards"]:
        table.add_row(
            r["shard"], str(r["clips"]), str(r["windows"]), f"[green]{r['done']}[/green]",
            f"[yellow]{r['stale']}[/yellow]" if r["stale"] else "0",
            f"[red]{r['failed']}[/red]" if r["failed"] else "0", str(r["pending"]),
        )
    console.print(table)
    for key, reason in list(st["failed"].items())[:20]:
        console.print(f"[red]failed[/red] {key}: {reason}")
    if st["stale"]:
        shown = ", ".join(st["stale"][:10]) + (" ..." if len(st["stale"]) > 10 else "")
        console.print(f"[yellow]stale[/yellow] ({len(st['stale'])}; settings changed since extraction): {shown}")
    if st["totals"]["orphans"]:
        console.print(f"{st['totals']['orphans']} stored entries are not windows of the current manifest (orphans)")
    if not st["complete"]:
        console.print("Run `tj-extract run --shard I/N` for each shard to extract what is stale, failed or pending.")


if __name__ == "__main__":
    app()
