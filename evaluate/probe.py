"""Linear probes of cached features on held-out scenes: what a representation makes linearly
available, before any predictor is trained on it (the guidance preconditions and
``benchmarks/probe_guidance.py``).

Folds are whole scenes, so a probe cannot score by recognising a scene it was fitted on (the
random thinker's features are dominated by the scene: docs/reference.md)."""

from __future__ import annotations

import numpy as np


def ridge_fold_predictions(X: np.ndarray, Y: np.ndarray, groups: np.ndarray, folds: int = 4,
                           lam: float = 10.0) -> np.ndarray:
    """Held-out predictions of ``Y`` [N, D] from ``X`` [N, F]: ridge fitted on the other folds'
    groups, features standardised with the fitting rows' statistics. Dual form, because there
    are far fewer samples than features. Groups are assigned to folds round-robin in sorted
    order, so the result is a function of the data alone."""
    groups = np.asarray(groups)
    keys = sorted(set(groups.tolist()))
    if len(keys) < folds:
        raise ValueError(f"{len(keys)} groups cannot make {folds} held-out folds")
    fold_of = {g: i % folds for i, g in enumerate(keys)}
    fold = np.array([fold_of[g] for g in groups.tolist()])
    X = np.asarray(X, np.float64)
    Y = np.asarray(Y, np.float64)
    P = np.zeros_like(Y)
    for k in range(folds):
        tr, te = fold != k, fold == k
        mu, sd = X[tr].mean(0), X[tr].std(0) + 1e-6
        A, B = (X[tr] - mu) / sd, (X[te] - mu) / sd
        ym = Y[tr].mean(0)
        alpha = np.linalg.solve(A @ A.T + lam * np.eye(len(A)), Y[tr] - ym)
        P[te] = B @ (A.T @ alpha) + ym
    return P


def held_out_r2(X: np.ndarray, Y: np.ndarray, groups: np.ndarray, **kw) -> np.ndarray:
    """R^2 per target column of the held-out ridge predictions (0: no better than the mean)."""
    Y = np.asarray(Y, np.float64)
    P = ridge_fold_predictions(X, Y, groups, **kw)
    return 1 - ((P - Y) ** 2).sum(0) / ((Y - Y.mean(0)) ** 2).sum(0)


def held_out_accuracy(X: np.ndarray, labels: np.ndarray, groups: np.ndarray, classes: int, **kw) -> float:
    """Accuracy of the one-vs-rest ridge classifier's held-out argmax."""
    labels = np.asarray(labels)
    P = ridge_fold_predictions(X, np.eye(classes)[labels], groups, **kw)
    return float((P.argmax(1) == labels).mean())


__all__ = ["held_out_accuracy", "held_out_r2", "ridge_fold_predictions"]
