"""benchmarks/bench_guidance.py --quick: the whole benchmark path (v2 data in three modes, vLLM
extraction, encode, training over seeds, tj-eval) runs and its table is complete."""

import importlib.util
import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_guidance.py"


def test_quick_benchmark_writes_a_complete_table(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("bench_guidance", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "table.json"
    assert bench.main(["--quick", "--workdir", str(tmp_path), "--out", str(out)]) == 0
    table = json.loads(out.read_text())["table"]
    assert set(table) == {"cued", "shuffled", "absent"}
    cued = table["cued"]["rows"]
    assert {"thinkjepa", "jepa_only", "vlm_only", "last_observed", "constant_velocity"} <= set(cued)
    assert set(table["shuffled"]["rows"]) >= {"thinkjepa", "jepa_only", "last_observed"}
    for mode in table.values():
        for row in mode["rows"].values():
            assert 0 < row["ADE"] < 1 and 0 < row["ADE_before_turn"] < 1 and 0 < row["ADE_after_turn"] < 1
    ci = cued["thinkjepa"]["vs_jepa_only"]
    assert ci["lo"] <= ci["mean_diff"] <= ci["hi"]
    assert table["cued"]["test_ablations"]  # the test-time guidance ablations of thinkjepa
    printed = capsys.readouterr().out
    assert "thinkjepa" in printed and "table:" in printed
