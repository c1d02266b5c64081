"""``tj-eval``: compare trained variants and baselines on the held-out split."""

from __future__ import annotations

import json

from rich.table import Table

from thinkjepa.app.cli.common import (
    ConfigOpt,
    JsonOpt,
    SetOpt,
    VerboseOpt,
    VersionOpt,
    cli_command,
    console,
    load,
    typer_app,
)

app = typer_app("Evaluate trained variants against baselines (ADE / FDE / Acc, rollouts, ablations).", single_command=True)


@app.command()
@cli_command("tj-eval")
def main(config: ConfigOpt = None, set_: SetOpt = None, json_out: JsonOpt = False, verbose: VerboseOpt = False,
         version: VersionOpt = False) -> None:
    """Forecast the eval split with every variant in eval.variants (every seed of train.seeds,
    best checkpoint by val ADE), the baselines and the test-time guidance ablations; writes
    metrics.json/.parquet, report.md, report.html and plots. --json prints metrics.json."""
    from thinkjepa.evaluate import run_eval
    from thinkjepa.evaluate.report import format_ci

    cfg = load(config, set_, verbose)
    if json_out:
        result = run_eval(cfg)
    else:
        with console.status("evaluating") as status:
            result = run_eval(cfg, progress=lambda what: status.update(f"evaluating {what}"))
    if json_out:
        print(json.dumps(result, indent=1))
        return
    table = Table(title=f"{cfg.eval.split} split: {result['window_set']['windows']} windows, mean ± std over seeds")
    for col in ("model", "ADE (m)", "FDE (m)", "Acc", "ΔADE vs jepa_only [95% CI]"):
        table.add_column(col)
    for name, m in result["models"].items():
        ci = format_ci(m.get("vs_jepa_only") or m.get("vs_thinkjepa"))
        if "vs_thinkjepa" in m:
            ci += " (vs thinkjepa)"
        table.add_row(name, *(f"{m[k]:.4f} ± {m[k + '_std']:.4f}" if m["seeds"] else f"{m[k]:.4f}" for k in ("ADE", "FDE", "Acc")), ci)
    console.print(table)
    for note in result["notes"]:
        console.print(f"[yellow]note:[/yellow] {note}")
    console.print(f"report: {result['report']} (and {result['html']})")


if __name__ == "__main__":
    app()
