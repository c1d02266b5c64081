"""Paired bootstrap and seed statistics on cases with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from thinkjepa.evaluate import paired_bootstrap
from thinkjepa.evaluate.stats import (
    MIN_SEEDS,
    MIN_WINDOWS,
    align,
    comparison,
    hierarchical_bootstrap,
    mean_std,
    seed_comparison,
    t_interval,
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
    mean, lo, hi = paired_bootstrap([1.0, 3.0], [1.0, 2.0], n_boot=4000, seed=0, method="percentile")
    assert (mean, lo, hi) == (0.5, 0.0, 1.0)


def test_bca_corrects_the_percentile_interval_of_a_skewed_difference():
    # a few windows gain a lot, most a little: the mean's sampling distribution is skewed, and
    # BCa moves the interval toward the long tail where the percentile interval does not
    rng = np.random.default_rng(4)
    d = np.where(rng.random(60) < 0.1, rng.exponential(2.0, 60), rng.normal(0.05, 0.02, 60))
    zero = np.zeros_like(d)
    m, lo_b, hi_b = paired_bootstrap(d, zero, n_boot=4000, seed=1)
    _, lo_p, hi_p = paired_bootstrap(d, zero, n_boot=4000, seed=1, method="percentile")
    assert m == pytest.approx(d.mean()) and lo_b <= m <= hi_b
    assert lo_b > lo_p and hi_b > hi_p


def test_nothing_is_called_below_the_minimum_counts():
    # one window: the interval collapses onto the difference; it excludes 0 and is still not called
    one = comparison({"w@1": 0.2}, {"w@1": 0.5}, n_boot=200)
    assert (one["lo"], one["hi"]) == (pytest.approx(-0.3), pytest.approx(-0.3)) and one["excludes_zero"]
    assert not one["enough"] and not one["significant"] and one["min_windows"] == MIN_WINDOWS
    for n in (MIN_WINDOWS - 1, MIN_WINDOWS):
        a = {f"w@{i}": 1.0 + 0.01 * i for i in range(n)}
        b = {f"w@{i}": 2.0 for i in range(n)}
        c = comparison(a, b, n_boot=200)
        assert c["excludes_zero"] and c["significant"] == (n >= MIN_WINDOWS)
    # seeds: a consistent gain over MIN_SEEDS - 1 seeds is not called, over MIN_SEEDS it is
    for k in (MIN_SEEDS - 1, MIN_SEEDS):
        a = {str(s): [-0.1 - 0.01 * s] * MIN_WINDOWS for s in range(k)}
        b = {str(s): [0.0] * MIN_WINDOWS for s in range(k)}
        cs = seed_comparison(a, b, n_boot=100)
        assert cs["excludes_zero"] and cs["significant"] == (k >= MIN_SEEDS) and cs["hierarchical"]["enough"] == (k >= MIN_SEEDS)


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


def test_t_interval_is_scipys_paired_t_interval():
    from scipy import stats

    d = np.array([0.3, -0.1, 0.5, 0.2, 0.0, 0.4, 0.1, -0.2, 0.3, 0.2, 0.6, 0.1])  # 12 seeds: df 11, between table rows
    mean, lo, hi = t_interval(d)
    half = stats.t.ppf(0.975, d.size - 1) * d.std(ddof=1) / np.sqrt(d.size)
    assert mean == pytest.approx(d.mean()) and lo == pytest.approx(mean - half) and hi == pytest.approx(mean + half)
    assert stats.t.ppf(0.975, 11) < 2.228  # the old table's value for df 11 (conservative, now exact)
    assert t_interval([0.2, 0.2, 0.2]) == (pytest.approx(0.2), pytest.approx(0.2), pytest.approx(0.2))
    with pytest.raises(ValueError, match="at least 2"):
        t_interval([1.0])


def test_seed_interval_is_the_paired_t_interval_of_per_seed_differences():
    # per-seed mean differences 1, 2, 3 (each seed's windows differ by the same amount): mean 2,
    # sample std 1, half width t(2) / sqrt(3)
    a = {"0": [1.0, 2.0], "1": [3.0, 4.0], "2": [5.0, 6.0]}
    b = {"0": [0.0, 1.0], "1": [1.0, 2.0], "2": [2.0, 3.0]}
    c = seed_comparison(a, b, n_boot=500)
    half = 4.302652729911275 / np.sqrt(3)  # Student t 97.5% quantile, 2 degrees of freedom
    assert c["mean_diff"] == pytest.approx(2.0) and c["per_seed_diff"] == {"0": 1.0, "1": 2.0, "2": 3.0}
    assert c["lo"] == pytest.approx(2.0 - half) and c["hi"] == pytest.approx(2.0 + half)
    assert not c["significant"] and c["higher_in"] == 3 and c["lower_in"] == 0 and c["seeds"] == 3 and c["windows"] == 2
    assert c["method"] == "paired t, scipy.stats.ttest_rel"
    # with one seed, or no seed in common, there is no interval over seeds
    assert seed_comparison({"0": [1.0]}, {"0": [0.0]}, n_boot=10) is None
    assert seed_comparison({"0": [1.0], "1": [1.0]}, {"2": [0.0], "3": [0.0]}, n_boot=10) is None


def test_seed_pairing_matters_a_consistent_small_gain_is_significant_over_seeds():
    # seeds differ a lot in level (a seed effect shared by both variants of that seed), the gain is
    # small and the same in every seed: paired by seed it is significant
    level = {"0": 0.0, "1": 5.0, "2": -3.0, "3": 8.0}
    a = {s: [v - 0.1 + w for w in range(MIN_WINDOWS)] for s, v in level.items()}
    b = {s: [v + 0.01 * k + w for w in range(MIN_WINDOWS)] for k, (s, v) in enumerate(level.items())}
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
