"""``tj-train`` (also ``tj train``) and ``tj encode``: thin typer layers over
``thinkjepa.train.loop.run_training`` and ``thinkjepa.extract.encode.run_encode``.

``tj-train`` is a one-command typer app (so its --help shows no COMMAND); ``tj`` mounts the
same function as ``tj train``. Under ``accelerate launch -m thinkjepa.app.cli.train_cmd ...`` it
trains on every process.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperCommand

from thinkjepa.app.cli.common import (
    EXIT_FAILED,
    ConfigOpt,
    JsonOpt,
    ProgressOpt,
    SetOpt,
    UsageError,
    VerboseOpt,
    VersionOpt,
    cli_command,
    console,
    load,
    parse_shard,
    typer_app,
)
from thinkjepa.config import BUILTIN_VARIANTS  # one home for the built-in names


def _configured_variants(path: Path = Path("pipelines.yaml")) -> list[str]:
    """Keys of ``variants:`` in the config file, for --help (never fails: help must show)."""
    try:
        import yaml

        return sorted((yaml.safe_load(path.read_text()) or {}).get("variants", {}) or {})
    except Exception:  # noqa: BLE001 - a broken file is reported when a command loads it
        return []


def variant_help(config: Path | None = None) -> str:
    path = config or Path("pipelines.yaml")
    names = ", ".join(dict.fromkeys(BUILTIN_VARIANTS + tuple(_configured_variants(path))))
    return f"Variant to train, one of: {names} (a key of `variants:` in {path}; default: model.variant)."


def _config_in(args: list[str]) -> Path | None:
    """The file ``--config``/``-c`` names in a command line (the last one wins, as in parsing)."""
    found = None
    for i, a in enumerate(args):
        if a in ("--config", "-c") and i + 1 < len(args):
            found = Path(args[i + 1])
        elif a.startswith("--config="):
            found = Path(a.split("=", 1)[1])
    return found


class ConfigAwareCommand(TyperCommand):
    """``--help`` lists the variants of the file ``--config`` names: click builds help text
    while it parses (``--help`` is eager), so the option's help is set from the raw arguments
    first."""

    def make_context(self, info_name, args, parent=None, **extra):  # type: ignore[override]
        help_text = variant_help(_config_in(list(args)))
        for param in self.params:
            if param.name == "variant":
                param.help = help_text  # type: ignore[attr-defined]
        return super().make_context(info_name, args, parent=parent, **extra)


def check_variant(cfg, name: str) -> str:
    known = list(BUILTIN_VARIANTS) + sorted(cfg.variants)
    if name not in known:
        raise UsageError(f"unknown variant {name!r}; choose one of: {', '.join(known)}")
    return name


app = typer_app("Stage two: train the ThinkJEPA predictor (or a baseline/ablation variant) from the caches.", single_command=True)


@app.command(cls=ConfigAwareCommand)
@cli_command("tj-train", long=True)
def train(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    variant: Annotated[str | None, typer.Option("--variant", help=variant_help())] = None,
    seed: Annotated[
        int | None, typer.Option("--seed", help="Train this seed only (default: every seed in train.seeds).")
    ] = None,
    resume: Annotated[bool, typer.Option(
        "--resume", help="Only continue last.pt: refuse if settings or data changed, or there is none.")] = False,
    restart: Annotated[bool, typer.Option(
        "--restart", help="Start afresh; existing checkpoints are kept as *.stale-*.pt.")] = False,
    progress: ProgressOpt = True,
    json_out: JsonOpt = False,
    verbose: VerboseOpt = False,
    version: VersionOpt = False,
) -> None:
    """Train one variant for every seed of train.seeds, each into <train.out>/<variant>/seed-<s>/;
    resumes from its last.pt when its settings and data match, starts afresh when the settings
    changed, and refuses when the data changed (saying what changed) unless --restart is given."""
    from thinkjepa.train.seeds import train_seeds

    if resume and restart:
        raise UsageError("--resume and --restart exclude each other")
    cfg = load(config, set_, verbose)
    name = check_variant(cfg, variant or cfg.model.variant)
    mode = "resume" if resume else "restart" if restart else "auto"
    runs = train_seeds(cfg, name, None if seed is None else [seed], progress=progress and not json_out, resume=mode)
    rows = []
    for s, (run_dir, _) in runs.items():
        summary = json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").exists() else {}
        rows.append({"variant": name, "seed": s, "run_dir": str(run_dir), **summary})
    if int(os.environ.get("RANK", "0")) != 0:
        return  # one report per run: rank 0's
    if json_out:
        print(json.dumps(rows if len(rows) != 1 else rows[0], default=str))
        return
    for row in rows:
        best = row.get("best_val_ade")
        console.print(
            f"[green]trained {name} seed {row['seed']}[/green]: {row.get('steps')} steps, "
            f"best val ADE {best if best is None else f'{best:.4f}'} m -> {row['run_dir']}"
        )


@cli_command("tj encode", long=True)
def encode(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    shard: Annotated[str, typer.Option("--shard", help="Zero-based shard I/N of the manifest's clips.")] = "0/1",
    progress: ProgressOpt = True,
    json_out: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Encode past and future windows with frozen V-JEPA2 into the JEPA cache (resumable)."""
    from thinkjepa.extract.encode import run_encode

    i, n = parse_shard(shard)
    cfg = load(config, set_, verbose)
    summary = run_encode(cfg, shard=(i, n), progress=progress and not json_out)
    # clips too short for any window are recorded under their clip id, but are not errors of this run
    failed = {k: v for k, v in summary.failed.items() if "@" in k}
    if json_out:
        print(json.dumps({"part": summary.part, "done": summary.done, "skipped": summary.skipped,
                          "failed": summary.failed, "seconds": summary.seconds}))
    else:
        console.print(
            f"encode {summary.part}: {len(summary.done)} encoded, {len(summary.skipped)} already done, "
            f"{len(summary.failed)} failed ({summary.seconds:.1f} s)"
        )
        for key, why in list(summary.failed.items())[:10]:
            console.print(f"  [red]{key}[/red]: {why}")
        if failed:
            console.print(f"fix the input (or leave it) and rerun `tj encode --shard {i}/{n}`: it retries only the failed windows")
    if failed:
        raise typer.Exit(EXIT_FAILED)


if __name__ == "__main__":
    app()
