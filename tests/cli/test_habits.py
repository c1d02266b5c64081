"""The habits users bring from git, dvc and snakemake: ``-v/--verbose`` on every command,
``--version`` on every console script, ``tj status --exit-code``, ``tj run --dry-run``, and a
``tj-train --help`` that lists the variants of the file ``--config`` names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from thinkjepa.app.cli import eval_cmd, extract_cmd, main, train_cmd
from thinkjepa.app.cli.common import EXIT_STALE

runner = CliRunner()
SCRIPTS = [("tj", main.app), ("tj-extract", extract_cmd.app), ("tj-train", train_cmd.app), ("tj-eval", eval_cmd.app)]


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no ./pipelines.yaml unless a test writes one


def _commands(app, prog: str):
    for c in app.registered_commands:
        yield [*prog.split()[1:], c.name or c.callback.__name__]
    for g in app.registered_groups:
        yield from _commands(g.typer_instance, f"{prog} {g.name}")


@pytest.mark.parametrize(("prog", "app"), SCRIPTS, ids=[s[0] for s in SCRIPTS])
def test_every_script_prints_its_version(prog, app) -> None:
    from importlib.metadata import version

    res = runner.invoke(app, ["--version"], prog_name=prog)
    assert res.exit_code == 0, res.output
    assert res.output.startswith(f"{prog} {version('thinkjepa')} ")


@pytest.mark.slow
@pytest.mark.parametrize(("prog", "app"), SCRIPTS, ids=[s[0] for s in SCRIPTS])
def test_every_command_takes_v_for_verbose(prog, app) -> None:
    commands = [[]] if prog in ("tj-train", "tj-eval") else list(_commands(app, prog))
    assert commands
    for args in commands:
        out = " ".join(runner.invoke(app, [*args, "--help"], terminal_width=200).output.split())
        assert "--verbose -v" in out, (prog, args)


def test_tj_train_v_is_verbose_not_variant(tmp_path) -> None:
    out = " ".join(runner.invoke(train_cmd.app, ["--help"], terminal_width=200).output.split())
    assert "--verbose -v" in out and "--variant -v" not in out


def _write_config(path: Path, variants: dict) -> Path:
    path.write_text(yaml.safe_dump({"workdir": str(path.parent / "work"), "variants": variants}))
    return path


@pytest.mark.slow
@pytest.mark.parametrize("app_args", [(train_cmd.app, []), (main.app, ["train"])], ids=["tj-train", "tj train"])
def test_train_help_lists_the_variants_of_the_named_config(app_args, tmp_path) -> None:
    app, prefix = app_args
    other = _write_config(tmp_path / "elsewhere.yaml", {"wide_film": {"model": {"pred_width": 96}}})
    _write_config(tmp_path / "pipelines.yaml", {"local_only": {"model": {"pred_width": 48}}})

    def helped(*args: str) -> str:
        res = runner.invoke(app, [*prefix, *args, "--help"], terminal_width=200)
        assert res.exit_code == 0, res.output
        return " ".join(res.output.split())

    for args in (["--config", str(other)], [f"--config={other}"], ["-c", str(other)]):
        out = helped(*args)
        assert "wide_film" in out and "local_only" not in out, args
    out = helped()  # no --config: ./pipelines.yaml, as the config loader reads it
    assert "local_only" in out and "wide_film" not in out
    assert all(v in out for v in ("thinkjepa", "jepa_only", "vlm_only"))


@pytest.fixture()
def data_args(tmp_path) -> list[str]:
    from thinkjepa.data.synth import synthesize_dataset

    root = tmp_path / "data"
    synthesize_dataset(root, episodes=3, seed=0, n_frames=20, size=32, tasks=3)
    sets = [f"workdir={tmp_path / 'work'}", f"data.root={root}", "sampling.past_frames=4",
            "sampling.future_frames=4", "sampling.thinker_frames=4"]
    return [a for s in sets for a in ("--set", s)]


def _files(root: Path) -> dict[str, int]:
    """Every file under ``root`` with its mtime, except the status memos (``state/listing``),
    which ``tj status`` refreshes too."""
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*")
            if p.is_file() and "listing" not in p.relative_to(root).parts}


@pytest.mark.slow
def test_status_exit_code_says_stale_only_when_asked(data_args, tmp_path, monkeypatch) -> None:
    res = runner.invoke(main.app, ["status", *data_args, "--json"])
    assert res.exit_code == 0, res.output  # informational by default, as before
    assert all(r["stale"] for r in json.loads(res.stdout))
    res = runner.invoke(main.app, ["status", *data_args, "--json", "--exit-code"])
    assert res.exit_code == EXIT_STALE == 3, res.output

    from thinkjepa.app import pipeline

    rows = json.loads(res.stdout)
    fresh = [{**r, "stale": False, "reasons": []} for r in rows]
    monkeypatch.setattr(pipeline, "status", lambda cfg: fresh)  # every stage fresh: what a finished run reports
    res = runner.invoke(main.app, ["status", *data_args, "--exit-code"])
    assert res.exit_code == 0, res.output


@pytest.mark.slow
def test_run_dry_run_says_what_would_run_and_writes_nothing(data_args, tmp_path) -> None:
    work = tmp_path / "work"
    res = runner.invoke(main.app, ["run", "--dry-run", "--json", *data_args])
    assert res.exit_code == 0, res.output
    plan = json.loads(res.stdout)
    assert plan["dry_run"] is True
    assert [(s["stage"], s["outcome"]) for s in plan["stages"]] == [
        (n, "would run") for n in ("index", "extract", "encode", "train", "eval")]
    assert plan["stages"][0]["reasons"] == ["never ran"]
    assert "upstream index is stale" in plan["stages"][1]["reasons"]
    assert _files(work) == {}  # no manifest, stamp, config snapshot or log

    res = runner.invoke(main.app, ["run", "index", *data_args])
    assert res.exit_code == 0, res.output
    before = _files(work)
    res = runner.invoke(main.app, ["run", "-n", *data_args])
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert "index: fresh" in text and "would run extract" in text and "would run eval" in text
    res = runner.invoke(main.app, ["run", "index", "--force", "--dry-run", "--json", *data_args])
    assert json.loads(res.stdout)["stages"] == [{"stage": "index", "outcome": "would run", "reasons": ["--force"]}]
    res = runner.invoke(main.app, ["run", "--shard", "1/2", "--dry-run", "--json", *data_args])
    outcomes = {s["stage"]: s["outcome"] for s in json.loads(res.stdout)["stages"]}
    assert outcomes == {"index": "fresh", "extract": "would run", "encode": "would run", "train": "left", "eval": "left"}
    assert _files(work) == before  # the manifest and its stamp untouched, nothing added
