"""``tj-eval``: compare trained variants and baselines on the held-out split."""

from __future__ import annotations

import json
from typing import Annotated

import typer
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

ModelOpt = Annotated[list[str] | None, typer.Option(
    "--model", help="A saved model folder (save_pretrained; training writes <run>/pretrained) or Hugging Face Hub id, "
                    "evaluated instead of the training runs; repeat for several. The config still names the data and caches.")]


@app.command()
@cli_command("tj-eval")
def main(config: ConfigOpt = None, set_: SetOpt = None, model: ModelOpt = None, json_out: JsonOpt = False,
         verbose: VerboseOpt = False, version: VersionOpt = False) -> None:
    """Forecast the eval split with every variant in eval.variants (every seed of train.seeds,
    best checkpoint by val ADE), or the saved models given with --model, the baselines and the
    test-time guidance ablations; writes metrics.json/.parquet, report.md, report.html, plots and
    forecast videos. --json prints metrics.json."""
    from thinkjepa.evaluate import run_eval
    from thinkjepa.evaluate.report import format_ci

    cfg = load(config, set_, verbose)
    saved = None
    if model:
        from thinkjepa.config import ModelConfig
        from thinkjepa.train.export import saved_models

        saved, model_cfg = saved_models(model)
        seeds = sorted({s for runs in saved.values() for s in runs})
        cfg = cfg.model_copy(update={"model": ModelConfig.model_validate(model_cfg),
                                     "eval": cfg.eval.model_copy(update={"variants": list(saved)}),
                                     "train": cfg.train.model_copy(update={"seeds": seeds})})
    if json_out:
        result = run_eval(cfg, saved=saved)
    else:
        with console.status("evaluating") as status:
            result = run_eval(cfg, progress=lambda what: status.update(f"evaluating {what}"), saved=saved)
    if json_out:
        print(json.dumps(result, indent=1))
        return
    ref = result.get("reference")
    console.print(result["verdict"], markup=False)
    table = Table(title=f"{cfg.eval.split} split: {result['window_set']['windows']} windows, mean ± std over seeds")
    for col in ("model", "ADE (m)", "FDE (m)", "Acc", f"ΔADE vs {ref} [95% CI, windows]"):
        table.add_column(col)
    for name, m in result["models"].items():
        ci = format_ci(m.get(f"vs_{ref}") or m.get("vs_thinkjepa"))
        if "vs_thinkjepa" in m:
            ci += " (vs thinkjepa)"
        table.add_row(name, *(f"{m[k]:.4f} ± {m[k + '_std']:.4f}" if m["seeds"] else f"{m[k]:.4f}" for k in ("ADE", "FDE", "Acc")), ci)
    console.print(table)
    for note in result["notes"]:
        console.print(f"[yellow]note:[/yellow] {note}")
    console.print(f"report: {result['report']} (and {result['html']}; {len(result['videos'])} forecast videos)")


if __name__ == "__main__":
    app()
