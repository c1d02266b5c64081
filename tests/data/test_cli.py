"""`tj data synth` and `tj data index` through typer's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from thinkjepa.app.cli.data_cmd import app
from thinkjepa.data.manifest import read_manifest

runner = CliRunner()


def _text(res) -> str:
    """Output with rich's line wrapping undone."""
    return " ".join(res.output.split())

STRIDE = ["--set", "sampling.mode=stride", "--set", "sampling.past_frames=8",
          "--set", "sampling.future_frames=8", "--set", "sampling.thinker_frames=8"]


@pytest.fixture(autouse=True)
def _no_project_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the defaults, not whatever pipelines.yaml the cwd holds


@pytest.mark.slow
def test_synth_then_index_json(tmp_path: Path) -> None:
    res = runner.invoke(app, ["synth", str(tmp_path / "ds"), "--episodes", "3", "--seed", "1", "--frames", "20", "--size", "32", "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["episodes"] == 3 and summary["n_frames"] == 20
    # an annotation renamed away: two problems (a video and an HDF5 file without partners)
    (tmp_path / "ds" / "reach_pads_pan" / "0.hdf5").rename(tmp_path / "ds" / "reach_pads_pan" / "x.hdf5")
    res = runner.invoke(app, ["index", str(tmp_path / "ds"), "--out", str(tmp_path / "m.parquet"), "--json", *STRIDE])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert set(out) == {"manifest", "clips", "problems"}
    reasons = {p["clip_id"]: p["reason"] for p in out["problems"]}
    assert "missing annotation" in reasons["reach_pads_pan/0"] and "missing video" in reasons["reach_pads_pan/x"]
    assert [r["clip_id"] for r in out["clips"]] == ["reach_pads_pan/1", "reach_pads_pan/2"]
    # one task folder: the split falls back to episodes (train + test), with one warning saying so
    assert sorted(r["split"] for r in out["clips"]) == ["test", "train"] and all(r["n_frames"] == 20 for r in out["clips"])
    warnings = [p["reason"] for p in out["problems"] if p["clip_id"] is None and p["severity"] == "warning"]
    assert any("grouped by episode" in w and "cross-task generalisation is not tested" in w for w in warnings)
    assert [r["clip_id"] for r in read_manifest(tmp_path / "m.parquet").to_pylist()] == [r["clip_id"] for r in out["clips"]]


@pytest.mark.slow
def test_index_text_output_lists_problems(tmp_path: Path, synth_root: Path) -> None:
    res = runner.invoke(app, ["index", str(synth_root), "--out", str(tmp_path / "m.parquet"), *STRIDE,
                              "--set", "sampling.past_frames=60"])
    assert res.exit_code == 1  # every episode too short: nothing usable
    assert "too short" in _text(res) and "reach_pads_pan/0" in _text(res)
    res = runner.invoke(app, ["index", str(synth_root), "--out", str(tmp_path / "m.parquet"), *STRIDE])
    assert res.exit_code == 0, res.output
    assert "train" in res.output and read_manifest(tmp_path / "m.parquet").num_rows == 16


def test_index_needs_a_root_and_a_valid_config(tmp_path: Path) -> None:
    res = runner.invoke(app, ["index", "--out", str(tmp_path / "m.parquet")])
    assert res.exit_code == 2 and "data.root" in _text(res)
    res = runner.invoke(app, ["index", str(tmp_path / "absent"), "--out", str(tmp_path / "m.parquet")])
    assert res.exit_code == 2 and "not a folder" in _text(res)
    res = runner.invoke(app, ["index", str(tmp_path), "--set", "sampling.mode=nonsense"])
    assert res.exit_code == 2 and "config error" in _text(res)


def test_help() -> None:
    for args in (["--help"], ["synth", "--help"], ["index", "--help"]):
        res = runner.invoke(app, args)
        assert res.exit_code == 0 and "Usage" in res.output


def test_synth_refuses_a_folder_holding_a_real_dataset_unless_forced(tmp_path: Path, egodex_root: Path) -> None:
    import shutil

    real = tmp_path / "egodex"
    shutil.copytree(egodex_root, real)
    before = {p: p.read_bytes() for p in real.rglob("*") if p.is_file()}
    args = ["synth", str(real), "-n", "1", "--frames", "16", "--size", "32", "--no-progress"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2 and "synth did not write" in _text(res) and "--force" in _text(res)
    assert {p: p.read_bytes() for p in real.rglob("*") if p.is_file()} == before
    # its own earlier output is not foreign: synth may rewrite it
    own = tmp_path / "own"
    assert CliRunner().invoke(app, ["synth", str(own), "-n", "1", "--frames", "16", "--size", "32", "--no-progress"]).exit_code == 0
    assert CliRunner().invoke(app, ["synth", str(own), "-n", "1", "--frames", "16", "--size", "32", "--no-progress"]).exit_code == 0
    assert CliRunner().invoke(app, [*args, "--force"]).exit_code == 0
