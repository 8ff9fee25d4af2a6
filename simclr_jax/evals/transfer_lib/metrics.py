"""The transfer datasets' metrics: top-1, mean per-class accuracy, 11-point mAP (VOC2007).

Top-1 and mean per-class accuracy come from scikit-learn (accuracy_score,
balanced_accuracy_score: the mean over classes of each class's recall, i.e. the mean of the
confusion matrix's normalised diagonal). The 11-point interpolated average precision is the
PASCAL VOC2007 devkit's (VOCevalcls.m), which scikit-learn does not provide: precision
interpolated as the maximum precision at recall >= t, averaged over t = 0, 0.1, ..., 1.
"""

import numpy as np
from sklearn.metrics import accuracy_score, balanced_accuracy_score, precision_recall_curve

SINGLE_LABEL = ("top1", "mean_per_class")
MULTI_LABEL = ("map11",)
METRICS = SINGLE_LABEL + MULTI_LABEL


def top1(labels: np.ndarray, scores: np.ndarray) -> float:
    """Fraction of examples whose highest score is their label."""
    return float(accuracy_score(labels, np.argmax(scores, axis=1)))


def mean_per_class(labels: np.ndarray, scores: np.ndarray) -> float:
    """Mean over the classes present in `labels` of each class's accuracy."""
    return float(balanced_accuracy_score(labels, np.argmax(scores, axis=1)))


def average_precision_11(targets: np.ndarray, scores: np.ndarray) -> float:
    """11-point interpolated AP of one class: targets in {0, 1}, higher score = positive."""
    if not np.any(targets):
        return float("nan")  # the devkit's AP is undefined without positives
    precision, recall, _ = precision_recall_curve(targets, scores)
    # The last point is scikit-learn's (recall 0, precision 1) end, which the devkit's
    # ranked list does not have: it would make the t = 0 term 1 whatever the ranking.
    precision, recall = precision[:-1], recall[:-1]
    # t = k / 10 in floating point can sit a hair above a recall of exactly k / 10 (0.1 * 3 >
    # 0.3): the tolerance keeps that recall at its threshold, as exact arithmetic would.
    points = [np.max(precision[recall >= t - 1e-9], initial=0.0)
              for t in np.linspace(0, 1, 11)]
    return float(np.mean(points))


def map11(targets: np.ndarray, scores: np.ndarray) -> float:
    """Mean over classes (with a positive) of the 11-point AP; targets (N, C) multi-hot."""
    aps = [average_precision_11(targets[:, c], scores[:, c]) for c in range(targets.shape[1])]
    return float(np.nanmean(aps))


def score(metric: str, labels: np.ndarray, scores: np.ndarray) -> float:
    """The value of `metric` (one of METRICS)."""
    return {"top1": top1, "mean_per_class": mean_per_class, "map11": map11}[metric](
        labels, scores)


def test_metrics(multi_label: bool, labels: np.ndarray, scores: np.ndarray) -> dict:
    """What results.json reports on the test split: top-1 and mean per-class accuracy of a
    single-label set, 11-point mAP of a multi-label one."""
    if multi_label:
        return {"test_map11": map11(labels, scores)}
    return {"test_top1": top1(labels, scores),
            "test_mean_per_class": mean_per_class(labels, scores)}
