"""Paired bootstrap and seed statistics on cases with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from thinkjepa.evaluate import paired_bootstrap
from thinkjepa.evaluate.stats import align, comparison, mean_std, window_digest


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
