"""The transfer metrics against independent definitions: the VOC devkit's 11-point AP written
here in numpy, scikit-learn's per-class precision-recall curve, a confusion matrix."""

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix, precision_recall_curve

from simclr_jax.evals.transfer_lib import metrics


def devkit_ap11(targets: np.ndarray, scores: np.ndarray) -> float:
    """VOCevalcls.m: rank by score, cumulative precision / recall, 11-point interpolation."""
    order = np.argsort(-scores, kind="stable")
    tp = np.cumsum(targets[order] == 1)
    fp = np.cumsum(targets[order] == 0)
    prec = tp / (tp + fp)
    ap = 0.0
    for k in range(11):  # recall >= k/10, exactly: tp * 10 >= k * positives
        p = prec[tp * 10 >= k * np.sum(targets == 1)]
        ap += (p.max() if p.size else 0.0) / 11
    return ap


def sklearn_curve_ap11(targets: np.ndarray, scores: np.ndarray) -> float:
    """The same interpolation over scikit-learn's curve of one class (its last point dropped:
    the artificial recall-0 end)."""
    p, r, _ = precision_recall_curve(targets, scores)
    p, r = p[:-1], r[:-1]
    return float(np.mean([p[r >= k / 10 - 1e-9].max() if np.any(r >= k / 10 - 1e-9) else 0.0
                          for k in range(11)]))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_map11_matches_the_devkit_and_sklearn_curves(seed):
    rng = np.random.default_rng(seed)
    n, c = 300, 6
    targets = (rng.random((n, c)) < rng.uniform(0.05, 0.5, c)).astype(np.int32)
    # Informative but imperfect scores: positives shifted up, plus noise.
    scores = targets * rng.uniform(0.2, 2.0, c) + rng.normal(size=(n, c))
    devkit = np.mean([devkit_ap11(targets[:, k], scores[:, k]) for k in range(c)])
    curves = np.mean([sklearn_curve_ap11(targets[:, k], scores[:, k]) for k in range(c)])
    assert metrics.map11(targets, scores) == pytest.approx(devkit, abs=1e-12)
    assert metrics.map11(targets, scores) == pytest.approx(curves, abs=1e-12)


def test_ap11_of_a_bad_first_rank_is_not_one():
    """The top-ranked example is a negative: the t = 0 term is the best precision reached
    (2/3 here), not 1."""
    targets = np.array([0, 1, 1, 0])
    scores = np.array([4.0, 3.0, 2.0, 1.0])
    assert metrics.average_precision_11(targets, scores) == pytest.approx(
        devkit_ap11(targets, scores))
    assert metrics.average_precision_11(targets, scores) == pytest.approx(2 / 3)


def test_mean_per_class_and_top1_against_a_confusion_matrix():
    rng = np.random.default_rng(0)
    n, c = 500, 7
    labels = rng.choice(c, n, p=np.linspace(1, 3, c) / np.linspace(1, 3, c).sum())
    scores = rng.normal(size=(n, c))
    scores[np.arange(n), labels] += rng.uniform(0, 2, n)
    cm = confusion_matrix(labels, scores.argmax(1), labels=np.arange(c))
    assert metrics.mean_per_class(labels, scores) == pytest.approx(
        np.mean(np.diag(cm) / cm.sum(1)))
    assert metrics.top1(labels, scores) == pytest.approx(np.trace(cm) / n)
    # Unbalanced classes: the two differ, so a swap would be caught.
    assert abs(metrics.mean_per_class(labels, scores) - metrics.top1(labels, scores)) > 1e-3
