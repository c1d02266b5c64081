"""``tj cache``: verify, show and summarise feature caches (thin layer over thinkjepa.cache_schema)."""

from __future__ import annotations

import difflib
import json
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from thinkjepa.app.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    JsonOpt,
    NoCaptureVerboseOpt,
    ProgressOpt,
    UsageError,
    cli_command,
    console,
    typer_app,
)

app = typer_app("Inspect and verify feature caches.")
out = Console()

PathArg = Annotated[str, typer.Argument(help="Cache location: a folder or an fsspec URL (memory://, s3://...).")]


def _open(path: str):
    from thinkjepa.cache_schema import CacheError, CacheReader

    try:
        return CacheReader(path)
    except CacheError as e:  # not a cache (or none there yet): the path is what to fix
        raise UsageError(str(e)) from e


@app.command("verify")
@cli_command("tj cache verify")
def verify_cmd(
    path: PathArg,
    json_out: JsonOpt = False,
    quick: Annotated[bool, typer.Option("--quick", help="Check structure only; do not read the data.")] = False,
    repair: Annotated[bool, typer.Option(
        "--repair", help="Un-commit every damaged entry (and remove temp files and orphans) so the next run of its "
                         "stage redoes exactly those; takes each affected part's writer lock.")] = False,
    progress: ProgressOpt = True,
    verbose: NoCaptureVerboseOpt = False,
) -> None:
    """Check schema, entries (readable, shapes, no NaN/Inf) and orphans; exit 1 listing problems
    (with --repair: exit 0 once everything found was repaired)."""
    from thinkjepa.cache_schema import CacheError, verify
    from thinkjepa.cache_schema import repair as do_repair

    with Progress(TextColumn("verify"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console,
                  transient=True, disable=json_out or not progress) as bar:
        task = bar.add_task("verify", total=None)
        problems = verify(path, check_data=not quick,
                          progress=lambda done, total: bar.update(task, completed=done, total=total))
    report = None
    if repair and problems:
        try:
            report = do_repair(path, problems=problems)
        except CacheError as e:
            console.print(f"[red]repair refused:[/red] {e}")
            raise typer.Exit(EXIT_USAGE) from e
    if json_out:
        doc = {"path": path, "ok": not problems, "problems": [p.to_dict() for p in problems]}
        if report is not None:
            doc["repair"] = report.to_dict()
        print(json.dumps(doc, indent=2))
    elif problems:
        table = Table(title=f"{len(problems)} problem(s) in {path}")
        for col in ("code", "key", "file", "detail"):
            table.add_column(col)
        for p in problems:
            table.add_row(p.code, p.key or "-", p.file or "-", p.detail)
        out.print(table)
        if report is not None:
            out.print(f"repaired: {len(report.uncommitted)} entries un-committed (their stage redoes them), "
                      f"{len(report.removed)} leftovers removed, {len(report.left)} problem(s) left as they are")
    else:
        out.print(f"[green]OK[/green] {path}")
    if report is not None:
        raise typer.Exit(EXIT_FAILED if any(p.code != "duplicate" for p in report.left) else EXIT_OK)
    raise typer.Exit(EXIT_FAILED if problems else EXIT_OK)


WindowKeyArg = Annotated[
    str,
    typer.Argument(metavar="WINDOW_KEY", help="Window key <task folder>/<episode>@<t>, e.g. sort_beads/9@12 "
                   "(`tj cache stats` and `tj-extract status` list them)."),
]


@app.command()
@cli_command("tj cache show")
def show(path: PathArg, window_key: WindowKeyArg, json_out: JsonOpt = False,
         verbose: NoCaptureVerboseOpt = False) -> None:
    """Shapes, dtypes, token counts, text and provenance of one cache entry (one window)."""
    import numpy as np

    from thinkjepa.cache_schema import TOKEN_VISION

    r = _open(path)
    if window_key not in r:
        near = difflib.get_close_matches(window_key, r.keys(), n=3)
        if not near and "@" not in window_key:
            near = [k for k in r.keys() if k.startswith(window_key + "@")][:3]
        hint = f"; did you mean {', '.join(near)}?" if near else " (a window key is <task>/<episode>@<t>)"
        raise UsageError(f"{window_key!r} is not committed in {path} ({len(r)} entries){hint}")
    rec = r.record(window_key)
    attrs = r.attrs(window_key)
    info = {
        "key": window_key, "part": rec["part"], "path": rec["path"], "kind": rec["kind"],
        "fingerprint": rec["fingerprint"], "committed_at": rec["committed_at"], "tokens": rec["tokens"],
        "arrays": {n: {"shape": a["shape"], "dtype": a["dtype"], "chunks": a["chunks"], "nbytes": a["nbytes"]}
                   for n, a in rec["arrays"].items()},
        "storage_dtype": r.meta.storage_dtype, "layers": r.meta.layers,
        "text": attrs.get("text"), "provenance": attrs.get("provenance", {}),
    }
    if r.meta.kind == "vlm":
        kind = r.read_batch([window_key], ["prefill_kind", "frame_index"])
        frames = kind["frame_index"][0][kind["prefill_kind"][0] == TOKEN_VISION]
        info["vision_frames"] = sorted(int(f) for f in np.unique(frames))
    if json_out:
        print(json.dumps(info, indent=2, default=str))
        return
    table = Table(title=f"{window_key}  ({info['kind']}, part {info['part']})")
    for col in ("array", "shape", "dtype", "chunks", "bytes"):
        table.add_column(col)
    for n, a in info["arrays"].items():
        table.add_row(n, str(a["shape"]), a["dtype"], str(a["chunks"]), f"{a['nbytes']:,}")
    out.print(table)
    out.print(f"tokens: {info['tokens']}  storage: {info['storage_dtype']}  layers: {info['layers']}")
    if "vision_frames" in info:
        out.print(f"vision tokens from frames: {info['vision_frames']}")
    out.print(f"fingerprint: {info['fingerprint']}")
    if info["text"] is not None:
        out.print(f"text: {info['text']!r}")
    out.print_json(data=info["provenance"], default=str)


@app.command()
@cli_command("tj cache stats")
def stats(path: PathArg, json_out: JsonOpt = False,
          norms: Annotated[bool, typer.Option(help="Compute per-layer norms (reads the mean arrays).")] = True,
          verbose: NoCaptureVerboseOpt = False) -> None:
    """Entries per part, token counts per stream, bytes, failures, per-layer mean norms (dask)."""
    from thinkjepa.cache_schema import cache_stats

    _open(path)
    s = cache_stats(path, norms=norms)
    if json_out:
        print(json.dumps(s, indent=2))
        return
    m = s["meta"]
    out.print(f"{s['url']}: {m['kind']} cache of {m['model']} ({m['storage_dtype']}, hidden {m['hidden_size']}), "
              f"{s['entries']} entries, {s['bytes'] / 1e6:.1f} MB, {s['failures']} failures")
    out.print(f"entries per part: {s['entries_per_part']}")
    table = Table(title="tokens per entry")
    for col in ("stream", "total", "mean", "min", "max"):
        table.add_column(col)
    for name, t in s["tokens"].items():
        table.add_row(name, str(t["total"]), f"{t['mean']:.1f}", str(t["min"]), str(t["max"]))
    out.print(table)
    if "layer_mean_norm" in s:
        table = Table(title="norm of per-entry token means (mean +- std over entries)")
        table.add_column("layer")
        for stream in s["layer_mean_norm"]:
            table.add_column(stream)
        layers = m["layers"]
        for i, layer in enumerate(layers):
            table.add_row(str(layer), *(f"{v['mean'][i]:.4g} +- {v['std'][i]:.2g}" for v in s["layer_mean_norm"].values()))
        out.print(table)
    if "latent_mean_norm" in s:
        out.print(f"norm of per-entry mean latent: {s['latent_mean_norm']}")
