"""Every command maps the project's errors to the same exit codes (thinkjepa.app.cli.common):
0 done, 1 work failed, 2 usage or config error, 130 on Ctrl-C. The work function behind each
command is made to raise; the command's code and message are checked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from thinkjepa.app.cli import eval_cmd, extract_cmd, main, train_cmd
from thinkjepa.app.cli.common import UsageError, exit_code_for

runner = CliRunner()

# (name, app, args, the work function the command calls)
COMMANDS = [
    ("tj data synth", main.app, ["data", "synth", "OUT"], "thinkjepa.data.synth.synthesize_dataset"),
    ("tj data index", main.app, ["data", "index", "ROOT"], "thinkjepa.data.manifest.build_manifest"),
    ("tj-extract run", extract_cmd.app, ["run"], "thinkjepa.extract.runner.run_shard"),
    ("tj-extract status", extract_cmd.app, ["status"], "thinkjepa.extract.status.extraction_status"),
    ("tj encode", main.app, ["encode"], "thinkjepa.extract.encode.run_encode"),
    ("tj-train", train_cmd.app, [], "thinkjepa.train.loop.run_training"),
    ("tj-eval", eval_cmd.app, [], "thinkjepa.evaluate.run_eval"),
    ("tj status", main.app, ["status"], "thinkjepa.app.pipeline.status"),
    ("tj run", main.app, ["run"], "thinkjepa.app.pipeline.run"),
    ("tj demo", main.app, ["demo"], "thinkjepa.app.demo.run_demo"),
    ("tj cache verify", main.app, ["cache", "verify", "memory://x"], "thinkjepa.cache_schema.verify"),
    ("tj cache show", main.app, ["cache", "show", "memory://x", "a/0@8"], "thinkjepa.app.cli.cache_cmd._open"),
    ("tj cache stats", main.app, ["cache", "stats", "memory://x"], "thinkjepa.app.cli.cache_cmd._open"),
]
CONFIG_COMMANDS = [c for c in COMMANDS if not c[0].startswith(("tj cache", "tj data synth", "tj demo"))]


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no pipelines.yaml; logs land in the tmp workdir


def _args(args: list[str], tmp_path: Path) -> list[str]:
    return [str(tmp_path / a) if a in ("OUT", "ROOT") else a for a in args]


def _registered(app, prog: str):
    """(command path, callback) of every command an app (and its sub-apps) registers."""
    for c in app.registered_commands:
        yield f"{prog} {c.name or c.callback.__name__}", c.callback
    for g in app.registered_groups:
        yield from _registered(g.typer_instance, f"{prog} {g.name}")


def test_every_registered_command_runs_under_cli_command_and_is_checked_here() -> None:
    """A command added without ``cli_command`` (or left out of COMMANDS) fails here, before it
    can drift to its own exit codes."""
    checked = {c[0] for c in COMMANDS}
    apps = [("tj", main.app), ("tj-extract", extract_cmd.app), ("tj-train", train_cmd.app), ("tj-eval", eval_cmd.app)]
    seen = []
    for prog, app in apps:
        for path, callback in _registered(app, prog):
            assert getattr(callback, "cli_name", None) in checked, f"{path} is not a cli_command in COMMANDS"
            seen.append(callback.cli_name)
    assert set(seen) == checked  # and every name checked here is a real command


@pytest.mark.parametrize(("error", "code"), [
    (KeyboardInterrupt(), 130), (RuntimeError("the work broke"), 1), (FileNotFoundError("no such input"), 2),
])
@pytest.mark.parametrize(("name", "app", "args", "target"), COMMANDS, ids=[c[0] for c in COMMANDS])
def test_exit_code_of_each_command(name, app, args, target, error, code, tmp_path, monkeypatch) -> None:
    def boom(*a, **kw):
        raise error

    monkeypatch.setattr(target, boom)
    res = runner.invoke(app, _args(args, tmp_path))
    assert res.exit_code == code, (name, res.output)
    text = " ".join(res.output.split())
    assert text.startswith(name), text  # one line naming the command ...
    assert ("interrupted" if code == 130 else str(error)) in text  # ... and the cause


@pytest.mark.parametrize(("name", "app", "args", "target"), CONFIG_COMMANDS, ids=[c[0] for c in CONFIG_COMMANDS])
def test_bad_config_is_a_usage_error(name, app, args, target, tmp_path) -> None:
    res = runner.invoke(app, [*_args(args, tmp_path), "--set", "sampling.mode=nonsense"])
    assert res.exit_code == 2 and "config error" in res.output and "sampling.mode" in res.output, res.output


def test_project_error_types_map_to_codes() -> None:
    from thinkjepa.cache_schema import CacheError, SchemaMismatchError
    from thinkjepa.data.egodex import EpisodeError
    from thinkjepa.data.manifest import NoEpisodesError

    assert exit_code_for(UsageError("x")) == exit_code_for(NoEpisodesError("x")) == 2
    assert exit_code_for(SchemaMismatchError("memory://c", ["model: a vs b"])) == 2
    assert exit_code_for(CacheError("x")) == exit_code_for(EpisodeError("a/0", "x")) == exit_code_for(ValueError()) == 1
    assert exit_code_for(KeyboardInterrupt()) == 130


def test_json_mode_reports_the_error_as_json(tmp_path, monkeypatch) -> None:
    def boom(*a, **kw):
        raise RuntimeError("the work broke")

    monkeypatch.setattr("thinkjepa.extract.status.extraction_status", boom)
    res = runner.invoke(extract_cmd.app, ["status", "--json"])
    assert res.exit_code == 1
    assert json.loads(res.stdout.strip().splitlines()[-1]) == {"ok": False, "exit_code": 1, "error": "the work broke"}


def test_real_usage_errors(tmp_path) -> None:
    res = runner.invoke(train_cmd.app, ["--variant", "nope"])
    assert res.exit_code == 2 and "unknown variant 'nope'" in res.output and "jepa_only" in res.output
    res = runner.invoke(main.app, ["run", "bogus"])
    assert res.exit_code == 2 and "bogus" in res.output
    res = runner.invoke(main.app, ["cache", "show", str(tmp_path / "none.zarr"), "a/0@8"])
    assert res.exit_code == 2, res.output
    res = runner.invoke(main.app, ["data", "index", str(tmp_path)])  # an empty folder is no EgoDex root
    assert res.exit_code == 2 and "tj data synth" in " ".join(res.output.split())
    res = runner.invoke(eval_cmd.app, [])  # nothing built yet: the message says what to run first
    assert res.exit_code == 2 and "tj data index" in " ".join(res.output.split()), res.output


def test_training_stopped_maps_to_its_signal() -> None:
    from thinkjepa.train.loop import TrainingStopped

    assert exit_code_for(TrainingStopped("v: stopped by SIGINT at step 3")) == 130
    assert exit_code_for(TrainingStopped("v: stopped by SIGTERM at step 3")) == 143
    assert exit_code_for(ZeroDivisionError()) is None  # a bug: shown with its traceback


@pytest.mark.parametrize("argv", [["tj-train"], ["tj-eval"]])
def test_help_has_no_phantom_command(argv) -> None:
    app = train_cmd.app if argv == ["tj-train"] else eval_cmd.app
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0 and "COMMAND" not in res.output and "[OPTIONS]" in res.output


def test_help_lists_the_choices() -> None:
    res = runner.invoke(main.app, ["run", "--help"])
    assert all(s in res.output for s in ("index", "extract", "encode", "train", "eval"))
    res = runner.invoke(train_cmd.app, ["--help"])
    assert all(v in res.output for v in ("thinkjepa", "jepa_only", "vlm_only"))
    res = runner.invoke(main.app, ["cache", "show", "--help"])
    assert "WINDOW_KEY" in res.output
    for args in (["run"], ["demo"], ["data", "index"], ["encode"], ["train"], ["extract", "run"], ["cache", "verify"]):
        out = runner.invoke(main.app, [*args, "--help"]).output
        assert "--no-progress" in out and "--json" in out, args


def _real_enospc() -> OSError:
    try:
        with open("/dev/full", "wb", buffering=0) as f:  # the kernel's always-full device
            f.write(b"x")
    except OSError as e:
        e.filename = e.filename or "/dev/full"
        return e
    raise AssertionError("/dev/full accepted a write")


@pytest.mark.parametrize(("name", "app", "args", "target"), COMMANDS, ids=[c[0] for c in COMMANDS])
def test_a_full_disk_says_where_how_much_is_free_and_what_to_do(name, app, args, target, tmp_path, monkeypatch) -> None:
    err = _real_enospc()

    def boom(*a, **kw):
        raise RuntimeError("commit failed") from err

    monkeypatch.setattr(target, boom)
    res = runner.invoke(app, _args(args, tmp_path))
    text = " ".join(res.output.split())
    assert res.exit_code == 1, (name, text)
    assert "no space left on the device writing /dev/full" in text and "MiB free" in text and "rerun" in text, text


@pytest.mark.parametrize(("signum", "code"), [(2, 130), (15, 143)])
def test_a_stage_stopped_by_a_signal_exits_128_plus_it(signum, code, tmp_path, monkeypatch) -> None:
    from thinkjepa.interrupts import StageInterrupted

    def stopped(*a, **kw):
        raise StageInterrupted(signum, "stopped; 3 entries kept; rerun the same command to resume")

    monkeypatch.setattr("thinkjepa.extract.runner.run_shard", stopped)
    res = runner.invoke(extract_cmd.app, ["run"])
    assert res.exit_code == code and "rerun the same command to resume" in " ".join(res.output.split())
