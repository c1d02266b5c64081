"""Every config value is checked when the config loads: each numeric or list field, given an
out-of-range, NaN, infinite or wrong-type value through the real CLI, exits 2 naming the key and
what is allowed, never with a traceback; duplicate YAML keys are refused the same way."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest
from pydantic import BaseModel
from typer.testing import CliRunner

from thinkjepa.app.cli.main import app
from thinkjepa.config import PipelineConfig, load_config

UNBOUNDED = {"data.split_seed"}
"""Numeric fields with no invalid number: a salt takes any integer."""


def _numeric(annotation: typing.Any) -> bool:
    if annotation in (int, float):
        return True
    return any(_numeric(a) for a in typing.get_args(annotation) if a is not type(None))


def numeric_fields() -> list[tuple[str, typing.Any]]:
    out = []
    for section, field in PipelineConfig.model_fields.items():
        model = field.annotation
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            continue
        for name, f in model.model_fields.items():
            if _numeric(f.annotation):
                out.append((f"{section}.{name}", f.annotation))
    return out


FIELDS = numeric_fields()


def _status(tmp_path: Path, *sets: str):
    args = ["status", "--set", f"workdir={tmp_path / 'w'}"]
    for s in sets:
        args += ["--set", s]
    return CliRunner().invoke(app, args)


def _refused(res, key: str) -> None:
    text = res.output
    assert res.exit_code == 2, (key, res.exit_code, text[-1500:], repr(res.exception))
    assert "Traceback" not in text and key.split(".")[0] in text, (key, text[-1500:])


def test_the_sweep_covers_the_fields_the_issue_named() -> None:
    names = {k for k, _ in FIELDS}
    assert {"sampling.past_frames", "train.lr_predictor", "train.batch_size", "data.split_fractions",
            "thinker.layers", "model.dropout", "eval.bootstrap"} <= names
    assert len(names) >= 50


@pytest.mark.slow  # ~200 CLI invocations
@pytest.mark.parametrize("key, annotation", FIELDS, ids=[k for k, _ in FIELDS])
def test_each_numeric_field_refuses_nan_inf_wrong_type_and_out_of_range(tmp_path: Path, key: str, annotation) -> None:
    origin = typing.get_origin(annotation)
    is_list = origin in (list, tuple) or any(typing.get_origin(a) in (list, tuple) for a in typing.get_args(annotation))
    wrong = ["abc", "{a: 1}"] + ([] if is_list else ["[1, 2]"])
    bad = [".nan", ".inf", "-.inf"]
    if is_list:
        bad = [f"[{b}, {b}, {b}]" for b in bad]
    for value in wrong + bad:
        _refused(_status(tmp_path, f"{key}={value}"), key)
    if key in UNBOUNDED:
        return
    candidates = ["[-1, -1, -1]", "[]", "[0, 0, 0]", "[2, 2, 2]"] if is_list else ["-1", "0", "-1000000", "2"]
    refused = 0
    for value in candidates:
        res = _status(tmp_path, f"{key}={value}")
        if res.exit_code != 0:
            _refused(res, key)
            refused += 1
    assert refused, f"{key}: no out-of-range value among {candidates} was refused"


@pytest.mark.parametrize("setting, says", [
    ("sampling.past_frames=0", "sampling.past_frames: must be >= 1"),
    ("train.lr_predictor=nan", "train.lr_predictor: Input should be a finite number"),
    ("train.batch_size=-4", "train.batch_size: must be >= 1, got -4"),
    ("data.split_fractions=[0,0,1]", "train > 0"),
    ("thinker.layers=[0,28]", "valid 0..27"),
    ("model.pred_heads=5", "divisible"),
])
def test_the_issues_cases_exit_2_naming_key_and_range(tmp_path: Path, setting: str, says: str) -> None:
    res = _status(tmp_path, setting)
    _refused(res, setting.split("=")[0])
    assert says in " ".join(res.output.split())


def test_duplicate_yaml_keys_are_refused(tmp_path: Path) -> None:
    cfg = tmp_path / "p.yaml"
    cfg.write_text(f"workdir: {tmp_path / 'w'}\ntrain:\n  batch_size: 4\n  lr_head: 0.1\n  batch_size: 8\n")
    with pytest.raises(Exception, match="duplicate key 'batch_size'"):
        load_config(cfg)
    res = CliRunner().invoke(app, ["status", "--config", str(cfg)])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert "duplicate key 'batch_size' (line 5)" in " ".join(res.output.split())


def test_a_config_that_is_not_yaml_is_refused_naming_the_file(tmp_path: Path) -> None:
    cfg = tmp_path / "p.yaml"
    cfg.write_text("workdir: [unclosed\n\tdata: {root: x\n")
    res = CliRunner().invoke(app, ["status", "--config", str(cfg)])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert f"{cfg}: not valid YAML" in "".join(res.output.split("\n"))


def test_defaults_and_the_repo_config_pass() -> None:
    assert load_config(None, use_default_file=False).train.batch_size >= 1
    repo = Path(__file__).resolve().parents[1] / "pipelines.yaml"
    assert load_config(repo).thinker.layers


def test_training_rollout_longer_than_the_windows_horizon_is_refused() -> None:
    base = load_config(None, use_default_file=False).model_dump()
    base["sampling"].update(mode="stride", horizon_steps=4)
    base["train"]["rollout_steps"] = 4
    assert PipelineConfig.model_validate(base).train.rollout_steps == 4
    base["train"]["rollout_steps"] = 5
    with pytest.raises(ValueError, match=r"train.rollout_steps=5 needs sampling.mode=stride with sampling.horizon_steps >= 5"):
        PipelineConfig.model_validate(base)
