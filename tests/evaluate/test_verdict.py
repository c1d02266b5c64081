"""The report's one verdict: the wider interval decides and is named with the reason, nothing is
called below the minimum counts, and the reference is jepa_matched when evaluated."""

from __future__ import annotations

import numpy as np

from thinkjepa.evaluate.run import reference_of
from thinkjepa.evaluate.stats import comparison, seed_comparison
from thinkjepa.evaluate.verdict import decide


def _models(per_seed_a: dict[str, list[float]], per_seed_b: dict[str, list[float]], ref: str = "jepa_only") -> dict:
    ids = [f"t/{i}@8" for i in range(len(next(iter(per_seed_a.values()))))]
    mean_a = dict(zip(ids, np.mean(list(per_seed_a.values()), axis=0)))
    mean_b = dict(zip(ids, np.mean(list(per_seed_b.values()), axis=0)))
    tj = {"kind": "variant", "seeds": [int(s) for s in per_seed_a], f"vs_{ref}": comparison(mean_a, mean_b, 500)}
    over = seed_comparison(per_seed_a, per_seed_b, 500)
    if over is not None:
        tj[f"vs_{ref}_seeds"] = over
    return {"thinkjepa": tj, ref: {"kind": "variant", "seeds": [int(s) for s in per_seed_b]}}


def test_runs_varying_more_than_windows_let_the_seed_interval_decide():
    # the same small gain on every window, but each training run lands elsewhere: the window
    # interval is narrow and excludes 0, the seed interval is wide and contains 0. One verdict.
    rng = np.random.default_rng(0)
    shift = {"0": -0.02, "1": 0.015, "2": -0.01, "3": 0.012}
    a = {s: list(1.0 + d + rng.normal(0, 1e-4, 40)) for s, d in shift.items()}
    b = {s: [1.0] * 40 for s in shift}
    models = _models(a, b)
    assert models["thinkjepa"]["vs_jepa_only"]["significant"] != models["thinkjepa"]["vs_jepa_only_seeds"]["significant"]
    v = decide(models, "thinkjepa", "jepa_only")
    assert v.decides == "seeds" and v.called
    assert v.headline.startswith("**Verdict: no measurable difference between thinkjepa and jepa_only**")
    assert "The interval over training seeds decides, because training runs vary more than windows" in v.headline
    assert "the interval over windows is shown for scale" in v.headline
    assert v.lines[0].startswith("Over 4 training seeds (paired t, scipy.stats.ttest_rel)") and "BCa bootstrap" in v.lines[1]


def test_a_consistent_gain_over_enough_seeds_and_windows_is_called():
    rng = np.random.default_rng(1)
    # windows differ in how much they gain (the same in every run), runs agree: windows decide
    gain = 0.05 + rng.normal(0, 0.02, 30)
    a = {str(s): list(1.0 + rng.normal(0, 0.2, 30)) for s in range(3)}
    b = {s: list(np.asarray(x) + gain) for s, x in a.items()}
    v = decide(_models(a, b), "thinkjepa", "jepa_only")
    assert v.called and v.headline.startswith("**Verdict: thinkjepa beats jepa_only**")
    assert v.decides == "windows" and "because windows vary more than training runs here" in v.headline


def test_one_window_or_too_few_seeds_is_no_call_and_says_what_to_add():
    one = _models({"0": [0.1], "1": [0.1], "2": [0.1]}, {"0": [0.5], "1": [0.5], "2": [0.5]})
    v = decide(one, "thinkjepa", "jepa_only")
    assert not v.called and v.headline.startswith("**Verdict: no call yet on thinkjepa vs jepa_only**")
    assert "only 1 test window (minimum 10: evaluate a larger split)" in v.headline and "seeds" not in v.headline.split("only")[1].split(".")[0]
    single_seed = _models({"0": [0.1 + 0.01 * i for i in range(20)]}, {"0": [0.5] * 20})
    v = decide(single_seed, "thinkjepa", "jepa_only")
    assert not v.called and v.decides == "windows" and "1 training seed (minimum 3: add seeds to `train.seeds`)" in v.headline
    assert "because only one training seed, so run-to-run variation is not measured" in v.headline


def test_identical_forecasts_are_named_as_such():
    same = _models({str(s): [0.3] * 12 for s in range(3)}, {str(s): [0.3] * 12 for s in range(3)})
    v = decide(same, "thinkjepa", "jepa_only")
    assert v.called and v.decides == "seeds" and "no measurable difference" in v.headline
    assert "the two models' forecasts do not differ here (both intervals are zero wide)" in v.headline


def test_the_reference_prefers_the_capacity_matched_baseline():
    assert reference_of({"thinkjepa": {}, "jepa_only": {}, "jepa_matched": {}}) == "jepa_matched"
    assert reference_of({"thinkjepa": {}, "jepa_only": {}}) == "jepa_only"
    assert reference_of({"thinkjepa": {}}) is None
    models = _models({"0": [0.1] * 12, "1": [0.2] * 12, "2": [0.15] * 12}, {"0": [0.3] * 12, "1": [0.3] * 12, "2": [0.3] * 12},
                     ref="jepa_matched")
    assert "thinkjepa beats jepa_matched" in decide(models, "thinkjepa", reference_of(models)).headline
    nothing = decide({"jepa_only": {"kind": "variant"}}, "thinkjepa", "jepa_only")
    assert nothing.decides is None and "nothing to compare" in nothing.headline


def test_a_gain_that_shows_only_after_the_first_step_is_the_rollouts_verdict():
    """Rollout benchmark v3's case: the event is after step 1, so one-shot shows nothing while the
    rollout over all steps shows the gain. The first line calls the rollout and then says the
    one-shot call; no rollout (1 step) keeps the one-shot verdict."""
    from thinkjepa.evaluate.verdict import decide_rollout

    rng = np.random.default_rng(1)
    seeds = ("0", "1", "2")
    one_a = {s: list(1.0 + rng.normal(0, 1e-3, 30)) for s in seeds}
    one_b = {s: list(1.0 + rng.normal(0, 1e-3, 30)) for s in seeds}
    models = _models(one_a, one_b, ref="jepa_matched")
    ro_a = {s: list(0.4 + rng.normal(0, 1e-3, 30)) for s in seeds}
    ro_b = {s: list(1.0 + rng.normal(0, 1e-3, 30)) for s in seeds}
    ro = _models(ro_a, ro_b, ref="jepa_matched")["thinkjepa"]
    models["thinkjepa"]["rollout_vs_jepa_matched"] = {"shifted": ro["vs_jepa_matched"]}
    models["thinkjepa"]["rollout_vs_jepa_matched_seeds"] = {"shifted": ro["vs_jepa_matched_seeds"]}
    one = decide(models, "thinkjepa", "jepa_matched")
    assert one.headline.startswith("**Verdict: no measurable difference")
    v = decide_rollout(models, "thinkjepa", "jepa_matched", "shifted", 4, one)
    assert v is not None and v.called and v.decides in ("seeds", "windows")
    assert v.headline.startswith("**Verdict over the 4-step rollout (`shifted`, ADE over all steps): thinkjepa beats jepa_matched** (")
    assert "One-shot (the first step alone): no measurable difference between thinkjepa and jepa_matched (" in v.headline
    assert v.lines[0].startswith("Rollout `shifted`, over ") and v.lines[-1] == one.lines[-1]
    assert decide_rollout(models, "thinkjepa", "jepa_matched", "shifted", 1, one) is None
    assert decide_rollout(models, "thinkjepa", "jepa_matched", "predicted", 4, one) is None
