"""Paired bootstrap and seed statistics on cases with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from thinkjepa.evaluate import paired_bootstrap
from thinkjepa.evaluate.stats import (
    align,
    comparison,
    hierarchical_bootstrap,
    mean_std,
    seed_comparison,
    t_quantile_975,
    window_digest,
)


def test_constant_difference_has_a_degenerate_interval_at_that_difference():
    rng = np.random.default_rng(0)
    b = rng.normal(size=50)
    mean, lo, hi = paired_bootstrap(b + 0.25, b, n_boot=500, seed=3)
    assert mean == pytest.approx(0.25) and lo == pytest.approx(0.25) and hi == pytest.approx(0.25)


def test_two_windows_the_bootstrap_distribution_is_known():
    # d = [0, 1]: resampled means are 0 (p 1/4), 0.5 (1/2), 1 (1/4): the 2.5% and 97.5%
    # percentiles are 0 and 1 (with thousands of resamples both tails are hit)
    mean, lo, hi = paired_bootstrap([1.0, 3.0], [1.0, 2.0], n_boot=4000, seed=0)
    assert (mean, lo, hi) == (0.5, 0.0, 1.0)


def test_pairing_matters_and_significance_follows_the_interval():
    rng = np.random.default_rng(1)
    base = rng.normal(0, 1.0, size=200)  # large between-window spread
    better = base - 0.05 + rng.normal(0, 0.01, size=200)  # small, consistent gain
    c = comparison(dict(enumerate(better)), dict(enumerate(base)), n_boot=1000)
    assert c["significant"] and c["hi"] < 0 and c["windows"] == 200
    # unpaired (shuffled partner) the same gain drowns in the spread
    unpaired = comparison(dict(enumerate(better)), dict(enumerate(rng.permutation(base))), n_boot=1000)
    assert not unpaired["significant"] and unpaired["lo"] < 0 < unpaired["hi"]


def test_align_pairs_by_id_and_refuses_other_sets():
    ids, a, b = align({"x@1": 1.0, "y@2": 2.0}, {"y@2": 20.0, "x@1": 10.0})
    assert ids == ["x@1", "y@2"] and a.tolist() == [1.0, 2.0] and b.tolist() == [10.0, 20.0]
    with pytest.raises(ValueError, match="only in the first"):
        align({"x@1": 1.0, "z@3": 0.0}, {"x@1": 1.0})
    with pytest.raises(ValueError, match="equal-length"):
        paired_bootstrap([1.0, 2.0], [1.0])


def test_mean_std_and_digest():
    assert mean_std([1.0, 3.0]) == (2.0, pytest.approx(np.sqrt(2.0)))
    assert mean_std([5.0]) == (5.0, 0.0)
    assert window_digest(["a@1", "b@2"]) == window_digest(["b@2", "a@1"]) != window_digest(["a@1"])


def test_t_quantiles_are_the_table_values_and_conservative_between_rows():
    assert t_quantile_975(1) == 12.706 and t_quantile_975(2) == 4.303 and t_quantile_975(4) == 2.776
    assert t_quantile_975(11) == t_quantile_975(10) == 2.228  # between rows: the smaller df's value
    assert t_quantile_975(10_000) == 1.980
    with pytest.raises(ValueError, match="2 seeds"):
        t_quantile_975(0)


def test_seed_interval_is_the_paired_t_interval_of_per_seed_differences():
    # per-seed mean differences 1, 2, 3 (each seed's windows differ by the same amount): mean 2,
    # sample std 1, half width t(2) / sqrt(3)
    a = {"0": [1.0, 2.0], "1": [3.0, 4.0], "2": [5.0, 6.0]}
    b = {"0": [0.0, 1.0], "1": [1.0, 2.0], "2": [2.0, 3.0]}
    c = seed_comparison(a, b, n_boot=500)
    half = 4.303 / np.sqrt(3)
    assert c["mean_diff"] == pytest.approx(2.0) and c["per_seed_diff"] == {"0": 1.0, "1": 2.0, "2": 3.0}
    assert c["lo"] == pytest.approx(2.0 - half) and c["hi"] == pytest.approx(2.0 + half)
    assert not c["significant"] and c["higher_in"] == 3 and c["lower_in"] == 0 and c["seeds"] == 3 and c["windows"] == 2
    # with one seed, or no seed in common, there is no interval over seeds
    assert seed_comparison({"0": [1.0]}, {"0": [0.0]}, n_boot=10) is None
    assert seed_comparison({"0": [1.0], "1": [1.0]}, {"2": [0.0], "3": [0.0]}, n_boot=10) is None


def test_seed_pairing_matters_a_consistent_small_gain_is_significant_over_seeds():
    # seeds differ a lot in level (a seed effect shared by both variants of that seed), the gain is
    # small and the same in every seed: paired by seed it is significant
    level = {"0": 0.0, "1": 5.0, "2": -3.0, "3": 8.0}
    a = {s: [v - 0.1, v - 0.1 + 1.0] for s, v in level.items()}
    b = {s: [v + 0.01 * k, v + 1.0] for k, (s, v) in enumerate(level.items())}
    c = seed_comparison(a, b, n_boot=500)
    assert c["significant"] and c["hi"] < 0 and c["lower_in"] == 4


def test_a_baseline_without_seeds_pairs_with_every_seed():
    c = seed_comparison({"-": [1.0, 1.0]}, {"0": [0.0, 0.0], "1": [0.5, 0.5]}, n_boot=200)
    assert c["per_seed_diff"] == {"0": 1.0, "1": 0.5} and c["seeds"] == 2


def test_hierarchical_bootstrap_holds_seed_variance_that_the_window_bootstrap_misses():
    # every window of a seed has the same difference, seeds disagree: the window bootstrap of the
    # seed-mean values is degenerate, the two-level one spans the seeds' range
    d = np.array([[-1.0] * 20, [1.0] * 20, [-2.0] * 20, [0.5] * 20])
    b = np.zeros_like(d)
    _, wlo, whi = paired_bootstrap(d.mean(axis=0), b.mean(axis=0), n_boot=500)
    assert wlo == whi == pytest.approx(-0.375)
    mean, lo, hi = hierarchical_bootstrap(d, b, n_boot=2000, seed=0)
    assert mean == pytest.approx(-0.375) and lo < -1.0 and hi > 0.0 and -2.0 <= lo and hi <= 1.0
    # a constant difference stays degenerate at two levels too
    assert hierarchical_bootstrap(b + 0.3, b, n_boot=100) == pytest.approx((0.3, 0.3, 0.3))
    with pytest.raises(ValueError, match="seeds, windows"):
        hierarchical_bootstrap(np.zeros(3), np.zeros(3))
