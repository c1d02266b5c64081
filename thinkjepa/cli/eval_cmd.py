"""``tj-eval``: compare trained variants and baselines on the held-out split."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from thinkjepa.cli.common import ConfigOpt, JsonOpt, SetOpt, VerboseOpt, cli_command, console, load

app = typer.Typer(help="Evaluate trained variants against baselines (ADE / FDE / Acc).", pretty_exceptions_show_locals=False,
                  add_completion=False)


@app.command()
@cli_command("tj-eval")
def main(config: ConfigOpt = None, set_: SetOpt = None, json_out: JsonOpt = False, verbose: VerboseOpt = False) -> None:
    """Forecast the eval split with each variant in eval.variants (best checkpoint by val ADE)
    and the last-observed-pose baseline; writes metrics.json/.parquet, report.md and plots."""
    from thinkjepa.evaluate.report import run_eval

    cfg = load(config, set_, verbose)
    result = run_eval(cfg)
    if json_out:
        print(json.dumps(result, indent=2))
        return
    table = Table(title=f"{cfg.eval.split} split")
    for col in ("model", "ADE (m)", "FDE (m)", "Acc@5cm"):
        table.add_column(col)
    for name, m in result["models"].items():
        table.add_row(name, f"{m['ADE']:.4f}", f"{m['FDE']:.4f}", f"{m['Acc']:.4f}")
    console.print(table)
    console.print(f"report: {result['report']}")


if __name__ == "__main__":
    app()
