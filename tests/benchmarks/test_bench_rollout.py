"""benchmarks/bench_rollout.py: the committed criteria file is complete and read, and the judge
passes and fails what it should on constructed per-seed, per-window, per-step values."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_rollout.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_rollout", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


PRIOR = BENCH.parent / "criteria_v3_prior.yaml"
ROLLOUT = BENCH.parent / "criteria_v3_rollout.yaml"
LARGE = BENCH.parent / "criteria_v3_large.yaml"


@pytest.mark.parametrize("path", [BENCH.parent / "criteria.yaml", PRIOR, ROLLOUT, LARGE])
def test_criteria_file_names_every_criterion_of_issue_28_and_fresh_judged_seeds(path):
    crit = _bench().load_criteria(path)
    assert {"R1", "R2", "F1", "F2", "E1", "V1a", "V1b"} == set(crit["criteria"])
    judged, dev = crit["generator_seeds"]["judged"], crit["generator_seeds"]["development"]
    assert len(judged) >= 2 and not set(judged) & set(dev) and not set(judged) & {1, 2, 3, 4}
    assert len(crit["size"]["training_seeds"]) >= 3
    assert crit["criteria"]["E1"]["interval_level"] == 0.90
    assert set(crit["rollout_modes"]) == {"shifted", "predicted"}


def test_prior_criteria_change_only_the_recipe_and_the_judged_seeds():
    bench = _bench()
    base, prior = bench.load_criteria(), bench.load_criteria(PRIOR)
    assert prior["size"]["set"] == [*base["size"]["set"], "model.motion_prior=constant_velocity"]
    assert not set(prior["generator_seeds"]["judged"]) & {*base["generator_seeds"]["judged"], *base["generator_seeds"]["development"]}
    for key in ("criteria", "statistics", "variants", "modes", "rollout_modes"):
        assert prior[key] == base[key], key
    assert {k: v for k, v in prior["size"].items() if k != "set"} == {k: v for k, v in base["size"].items() if k != "set"}


def test_rollout_criteria_change_only_the_recipe_the_layout_and_the_judged_seeds():
    """criteria_v3_rollout.yaml = criteria_v3_prior.yaml + the rollout loss, one window per
    episode, a larger size, fresh seeds; the criteria and their statistics are untouched."""
    bench = _bench()
    prior, new = bench.load_criteria(PRIOR), bench.load_criteria(ROLLOUT)
    assert new["size"]["set"] == [*prior["size"]["set"], "train.rollout_steps=4"]
    spent = {*prior["generator_seeds"]["judged"], *prior["generator_seeds"]["development"],
             *bench.load_criteria()["generator_seeds"]["judged"]}
    assert not set(new["generator_seeds"]["judged"]) & spent
    for key in ("criteria", "statistics", "variants", "modes", "rollout_modes"):
        assert new[key] == prior[key], key
    changed = {k for k in new["size"] if new["size"][k] != prior["size"].get(k)}
    assert changed == {"set", "scenes", "episodes_per_scene", "windows_per_clip", "max_steps"}
    assert new["size"]["windows_per_clip"] == 1 and new["size"]["rollout_steps"] == 4


def test_large_criteria_change_only_the_size_and_the_judged_seeds():
    """criteria_v3_large.yaml = criteria_v3_rollout.yaml at four times the scenes and 1000 steps,
    on fresh seeds; the recipe, the criteria and their statistics are untouched."""
    bench = _bench()
    spent = set()
    for path in (BENCH.parent / "criteria.yaml", PRIOR, ROLLOUT):
        c = bench.load_criteria(path)["generator_seeds"]
        spent |= {*c["judged"], *c["development"]}
    rollout, large = bench.load_criteria(ROLLOUT), bench.load_criteria(LARGE)
    assert not set(large["generator_seeds"]["judged"]) & spent
    assert large["generator_seeds"]["development"] == rollout["generator_seeds"]["development"]
    for key in ("criteria", "statistics", "variants", "modes", "rollout_modes"):
        assert large[key] == rollout[key], key
    changed = {k for k in large["size"] if large["size"][k] != rollout["size"].get(k)}
    assert changed == {"scenes", "max_steps", "val_every_steps"}
    assert large["size"]["scenes"] == 4 * rollout["size"]["scenes"]


@pytest.mark.parametrize(("path", "steps"), [(BENCH.parent / "criteria.yaml", 1), (PRIOR, 1), (ROLLOUT, 4), (LARGE, 4)])
def test_each_criteria_file_trains_with_the_loss_it_was_written_for(path, steps):
    """The demo default moved to the rollout loss after criteria.yaml and criteria_v3_prior.yaml
    were judged: rerunning them must still train on the one-step loss they name by omission."""
    from thinkjepa.app.demo import demo_defaults
    from thinkjepa.config import load_config

    bench = _bench()
    over = bench.overrides(bench.load_criteria(path)["size"])
    cfg = load_config(None, over, base=demo_defaults(), use_default_file=False)
    assert cfg.train.rollout_steps == steps


def _run(rng, gain: float, scenes: int = 6, per_scene: int = 4, seeds=("0", "1", "2")):
    """A cued/shuffled run: matched ADE grows with the step, thinkjepa is ``gain`` x matched
    (plus noise); constant velocity a bit above matched."""
    windows = [f"scene_{s:02d}/{e}@{t}" for s in range(scenes) for e in range(per_scene // 2) for t in (24, 28)]
    W = len(windows)
    base = 0.01 * (1 + np.arange(4))[None, None, :] * (1 + 0.2 * rng.random((1, W, 1)))
    matched = base + 0.0002 * rng.standard_normal((len(seeds), W, 4))
    think = gain * base + 0.0002 * rng.standard_normal((len(seeds), W, 4))
    cube = lambda a, s=list(seeds): {"seeds": s, "ADE": a.tolist()}  # noqa: E731
    models = {
        "thinkjepa": {m: cube(think) for m in ("shifted", "predicted")},
        "jepa_matched": {m: cube(matched) for m in ("shifted", "predicted")},
        "vlm_only": {m: cube(1.5 * base.repeat(len(seeds), 0)) for m in ("shifted", "predicted")},
        "last_observed": {m: cube(2.0 * base, ["-"]) for m in ("shifted", "predicted")},
        "constant_velocity": {m: cube(1.1 * base, ["-"]) for m in ("shifted", "predicted")},
    }
    return {"windows": windows, "steps": 4, "models": models}


@pytest.mark.parametrize("gain", [0.6, 1.0])
def test_judge_passes_a_clear_gain_and_fails_none(gain):
    bench = _bench()
    crit = bench.load_criteria()
    rng = np.random.default_rng(0)
    runs = {"11": {"cued": _run(rng, gain), "shuffled": _run(rng, 1.0), "absent": _run(rng, 1.0)}}
    v = bench.judge(runs, crit)
    assert v["F1"]["pass"] is (gain == 0.6) and v["R1"]["pass"] is (gain == 0.6)
    assert v["F2"]["pass"] and v["E1"]["pass"]  # matched < constant velocity; controls equal
    cell = v["R1"]["by_seed"]["11"]["cells"]["cued/shifted"]
    assert cell["ratio"] == pytest.approx(gain, rel=0.05)
    assert cell["intervals"]["scene"]["scenes"] == 6 and cell["intervals"]["seed"]["n"] == 3


def test_equivalence_fails_when_a_control_gains_and_a_missing_mode_fails():
    bench = _bench()
    crit = bench.load_criteria()
    rng = np.random.default_rng(1)
    v = bench.judge({"11": {"cued": _run(rng, 0.6), "shuffled": _run(rng, 0.8)}}, crit)
    assert not v["E1"]["pass"]
    cells = v["E1"]["by_seed"]["11"]["cells"]
    assert not cells["shuffled/shifted"]["pass"] and cells["absent/-"]["detail"] == "data mode absent not run"


def test_scene_interval_resamples_scenes_not_windows():
    bench = _bench()
    # two scenes, each internally constant: resampling windows would give a narrow interval,
    # resampling scenes can only give the two scene means (and mixtures of them)
    windows = [f"a/{i}@1" for i in range(50)] + [f"b/{i}@1" for i in range(50)]
    d = np.r_[np.full(50, -1.0), np.full(50, 1.0)][None]
    iv = bench.scene_interval(d, np.zeros_like(d), windows, 0.95, 2000, 0, "percentile")
    assert iv["lo"] == pytest.approx(-1.0) and iv["hi"] == pytest.approx(1.0)


def test_rejudge_combines_generator_seeds_from_written_files(tmp_path, capsys):
    import json

    bench = _bench()
    rng = np.random.default_rng(2)
    files = []
    for g, gain in (("11", 0.6), ("12", 1.0)):
        f = tmp_path / f"{g}.json"
        f.write_text(json.dumps({"runs": {g: {"cued": _run(rng, gain), "shuffled": _run(rng, 1.0), "absent": _run(rng, 1.0)}}}))
        files.append(str(f))
    out = tmp_path / "both.json"
    assert bench.main(["--rejudge", *files, "--out", str(out)]) == 0
    v = json.loads(out.read_text())["verdicts"]
    # R1 passes on seed 11 only, so it fails overall: every judged seed must pass
    assert v["R1"]["by_seed"]["11"]["pass"] and not v["R1"]["by_seed"]["12"]["pass"] and not v["R1"]["pass"]
    assert "FAIL  R1" in capsys.readouterr().out


def test_rejudge_merges_the_data_modes_of_one_seed_and_refuses_a_mode_twice(tmp_path):
    import json

    bench = _bench()
    rng = np.random.default_rng(3)
    cued, ctrl = tmp_path / "cued.json", tmp_path / "ctrl.json"
    cued.write_text(json.dumps({"runs": {"13": {"cued": _run(rng, 0.6)}}}))
    ctrl.write_text(json.dumps({"runs": {"13": {"shuffled": _run(rng, 1.0), "absent": _run(rng, 1.0)}}}))
    out = tmp_path / "both.json"
    assert bench.main(["--rejudge", str(cued), str(ctrl), "--out", str(out)]) == 0
    written = json.loads(out.read_text())
    assert set(written["runs"]["13"]) == {"cued", "shuffled", "absent"} and written["verdicts"]["E1"]["pass"]
    with pytest.raises(SystemExit, match="cued"):
        bench.main(["--rejudge", str(cued), str(cued)])


def test_a_run_cut_short_keeps_the_modes_that_finished_and_can_be_judged(tmp_path, monkeypatch):
    """A judged run stopped by a deadline or a crash after its cued mode: the JSON holds that
    mode (marked partial) and --rejudge judges it, the criteria of the missing modes unjudged."""
    bench = _bench()
    rng = np.random.default_rng(3)

    def run_seed(gseed, modes, crit, workdir, extra, with_jepa_only=False, ablations=None, on_mode=None):
        on_mode("cued", _run(rng, 0.6))
        raise KeyboardInterrupt  # the shuffled mode never finishes

    monkeypatch.setattr(bench, "run_seed", run_seed)
    out = tmp_path / "seed99.json"
    with pytest.raises(KeyboardInterrupt):
        bench.main(["--seeds", "99", "--out", str(out), "--workdir", str(tmp_path / "w")])
    kept = json.loads(out.read_text())
    assert kept["partial"] is True and list(kept["runs"]["99"]) == ["cued"] and "verdicts" not in kept
    judged = tmp_path / "judged.json"
    assert bench.main(["--rejudge", str(out), "--out", str(judged)]) == 0
    v = json.loads(judged.read_text())["verdicts"]
    assert v["R1"]["pass"] is True
    assert v["E1"]["pass"] is False
    assert v["E1"]["by_seed"]["99"]["cells"]["shuffled/-"]["detail"] == "data mode shuffled not run"
