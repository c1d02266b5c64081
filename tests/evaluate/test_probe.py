"""thinkjepa/evaluate/probe.py: held-out-scene ridge probes find what is linearly there, and only
what generalises across scenes."""

import numpy as np
import pytest

from thinkjepa.evaluate.probe import held_out_accuracy, held_out_r2, ridge_fold_predictions


def _groups(n_scenes: int, per_scene: int) -> np.ndarray:
    return np.repeat([f"scene_{s:02d}" for s in range(n_scenes)], per_scene)


def test_a_linear_target_is_found_on_held_out_scenes():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((96, 40))
    Y = X[:, :3] @ np.array([[1.0, 0.0, 0.5], [0.0, 2.0, 0.0], [0.3, 0.0, 1.0]])
    r2 = held_out_r2(X, Y, _groups(12, 8), lam=1e-3)
    assert r2.shape == (3,) and (r2 > 0.99).all()


def test_a_scene_identity_does_not_pass_as_a_signal():
    """Features that name the scene, a target constant per scene: a probe that memorised scenes
    would score 1; on held-out scenes it can do no better than the mean."""
    g = _groups(12, 8)
    scenes = sorted(set(g))
    X = np.eye(len(scenes))[[scenes.index(s) for s in g]]
    Y = np.random.default_rng(1).standard_normal(len(scenes))[[scenes.index(s) for s in g]][:, None]
    assert held_out_r2(X, Y, g)[0] <= 0.0


def test_class_accuracy_and_chance():
    rng = np.random.default_rng(2)
    g = _groups(12, 8)
    labels = np.tile(np.arange(4), 24)
    informative = np.eye(4)[labels] + 0.05 * rng.standard_normal((96, 4))
    assert held_out_accuracy(informative, labels, g, classes=4) == 1.0
    noise = rng.standard_normal((96, 50))
    assert held_out_accuracy(noise, labels, g, classes=4) < 0.6


def test_every_row_is_predicted_by_a_fit_that_did_not_see_its_scene():
    """Constant features: each prediction is the mean target of the other folds. Only scene 0
    has a non-zero target, so its own rows are predicted 0 and every other fold sees it."""
    g = _groups(8, 4)
    Y = np.where(g == "scene_00", 100.0, 0.0)[:, None]
    P = ridge_fold_predictions(np.zeros((32, 2)), Y, g)
    assert np.allclose(P[g == "scene_00"], 0.0)
    assert (P[g == "scene_01"] > 1.0).all()


def test_fewer_groups_than_folds_is_refused():
    with pytest.raises(ValueError, match="3 groups cannot make 4 held-out folds"):
        ridge_fold_predictions(np.zeros((6, 2)), np.zeros((6, 1)), _groups(3, 2))
