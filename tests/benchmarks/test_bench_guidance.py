"""benchmarks/bench_guidance.py --quick: the whole benchmark path (v2 data in three modes, vLLM
extraction, encode, training over seeds, tj-eval) runs and its table is complete."""

import importlib.util
import json
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_guidance.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_guidance", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def _row(before: float, ade: float) -> dict:
    return {"ADE": ade, "ADE_before_turn": before, "vs_jepa_only_seeds": None}


def test_fixed_turn_diagnosis_reads_the_share_of_the_before_turn_gap():
    bench = _bench()
    table = {"cued": {"rows": {"thinkjepa": _row(0.0050, 0.010), "jepa_only": _row(0.0060, 0.016)}},
             "fixed_turn": {"rows": {"thinkjepa": _row(0.0052, 0.008), "jepa_only": _row(0.0055, 0.008)}}}
    before, fixed = bench.diagnostics(table)
    assert "fixed_turn 0.0055" in before and "closes 50% of the cued gap" in before
    assert fixed.startswith("fixed_turn (nothing for the thinker to add): thinkjepa 0.0080 vs jepa_only 0.0080")
    assert bench.diagnostics({"cued": table["cued"]}) == []  # no fixed_turn run, nothing to read


def test_matched_reading_pairs_the_seeds_of_each_mode():
    bench = _bench()

    def row(per_seed: dict) -> dict:
        return {"ADE": sum(per_seed.values()) / len(per_seed), "per_seed_ADE": per_seed}

    table = {"cued": {"rows": {"thinkjepa": row({"0": 0.010, "1": 0.012, "2": 0.011}),
                               "jepa_matched": row({"0": 0.020, "1": 0.021, "2": 0.019})}},
             "shuffled": {"rows": {"thinkjepa": row({"0": 0.020, "1": 0.018}), "jepa_matched": row({"0": 0.019, "1": 0.019})}},
             "absent": {"rows": {"thinkjepa": row({"0": 0.02})}}}  # no jepa_matched: nothing to read
    cued, shuffled = bench.matched_reading(table)
    assert cued.startswith("cued: thinkjepa 0.0110 vs jepa_matched 0.0200 (0.550x; lower in 3/3 seeds, seeds 95% t [")
    lo, hi = (float(x) for x in cued.split("[")[1].rstrip("])").split(", "))
    assert lo < -0.0090 < hi < 0  # the paired mean difference, an interval that excludes 0
    assert "lower in 1/2 seeds" in shuffled
    lo, hi = (float(x) for x in shuffled.split("[")[1].rstrip("])").split(", "))
    assert lo < 0 < hi


@pytest.mark.slow
def test_quick_benchmark_writes_a_complete_table(tmp_path, capsys):
    bench = _bench()
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
