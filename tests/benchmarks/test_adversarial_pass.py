"""benchmarks/adversarial_pass.py on a few of its cases: the driver judges real CLI processes,
and the inputs it found mishandled stay handled (a torn model file, eval before training, a
config that is not YAML, integer poses)."""

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "adversarial_pass.py"
CASES = ["a config that is not YAML", "eval before any training", "joints stored as int32", "thinker config.json torn"]


def _bench():
    spec = importlib.util.spec_from_file_location("adversarial_pass", BENCH)
    bench = importlib.util.module_from_spec(spec)
    sys.modules["adversarial_pass"] = bench
    spec.loader.exec_module(bench)
    return bench


def test_the_judge_tells_each_outcome_apart():
    bench = _bench()
    refuse = bench.Case("x", [], "refuse", ["pipelines.yaml"], rc=2)
    assert bench.judge(refuse, 2, "config error: /a/pipelines.yaml: not valid YAML") == "clean"
    assert bench.judge(refuse, 2, "config error: not valid YAML") == "unnamed"
    assert bench.judge(refuse, 1, "/a/pipelines.yaml") == "wrong-exit"
    assert bench.judge(refuse, None, "") == "hung"
    assert bench.judge(refuse, 2, "╭─ Traceback (most recent call last) ─╮ pipelines.yaml") == "traceback"
    assert bench.judge(bench.Case("y", [], "ok"), 0, "") == "clean"


@pytest.mark.slow
def test_the_cases_it_found_are_handled(tmp_path, capsys):
    bench = _bench()
    assert {c.name for c in bench.CASES} >= set(CASES)
    rc = bench.main(["--root", str(tmp_path), *(x for c in CASES for x in ("-k", c))])
    out = capsys.readouterr().out
    assert f"adversarial pass: {len(CASES)} cases, clean {len(CASES)}" in out, out[-3000:]
    assert rc == 0
    assert not (tmp_path / "ran").exists()  # no case asked for a trained world: none was made
