"""The linear transfer protocol on host features: the regularisation path on train, judged on
validation; the chosen strength refitted on train + validation; one evaluation on test.

Each point of the path is recorded (validation score, and the solution the next point starts
from) as soon as it is fitted, so a rerun skips the finished points; a SIGTERM stops the path
after the point in progress (loop.Preempted).
"""

import dataclasses
import os
from collections.abc import Callable

import numpy as np
from absl import logging

from simclr_jax.evals import loop
from simclr_jax.evals.transfer_lib import logreg, metrics, state_files


@dataclasses.dataclass(frozen=True)
class PathConfig:
    """The regularisation path: `num` strengths log-spaced in [low, high], L-BFGS limits."""

    num: int
    low: float
    high: float
    max_iter: int
    tol: float
    threads: int  # 0: every core


@dataclasses.dataclass(frozen=True)
class HostSplits:
    """Features and targets (int labels, or (N, C) multi-hot) of the three splits."""

    train: tuple[np.ndarray, np.ndarray]
    val: tuple[np.ndarray, np.ndarray]
    test: Callable[[], tuple[np.ndarray, np.ndarray]]  # computed when selection is done


def _best(points: list[dict]) -> int:
    """The highest validation score; ties: the stronger regularisation (earlier on the path)."""
    return max(range(len(points)), key=lambda k: (points[k]["val_score"], -k))


def regularisation_path(data: HostSplits, metric: str, multi_label: bool, path: PathConfig,
                        directory: str, identity: dict, should_stop: Callable[[int], bool],
                        new_model: Callable[[], object] | None = None) -> list[dict]:
    """Every point of the path with its validation score, resumed from `directory`.
    `new_model()` makes the fitter (default: scikit-learn's, logreg.LinearModel)."""
    new_model = new_model or (lambda: logreg.LinearModel(multi_label, path.max_iter, path.tol,
                                                         path.threads))
    record_path = os.path.join(directory, "path.json")
    state_path = os.path.join(directory, "path_state.npz")
    saved = state_files.read_json(record_path)
    points = saved["points"] if saved and saved.get("identity") == identity else []
    if saved and not points and saved.get("points"):
        logging.warning("%s was written for another path or encoder: starting over",
                        record_path)
    (x, y), (xv, yv) = data.train, data.val
    num_models = y.shape[1] if multi_label else 1
    model = new_model()
    if points and (state := state_files.read_npz(state_path)) is not None:
        model.set_state(state, num_models)
    strengths = logreg.lambdas(path.num, path.low, path.high)
    for k in range(len(points), len(strengths)):
        lam = float(strengths[k])
        model.fit(x, y, lam)
        val = metrics.score(metric, yv, model.scores(xv))
        points.append({"lambda": lam, "C": logreg.c_of(lam, len(x)), "val_score": val,
                       "lbfgs_iterations": model.iterations})
        logging.info("linear path %d/%d: lambda=%.3g val %s=%.4f (%d L-BFGS iterations)",
                     k + 1, len(strengths), lam, metric, val, model.iterations)
        state_files.write_npz(state_path, model.get_state())
        state_files.write_json(record_path, {"identity": identity, "points": points})
        if should_stop(k + 1) and k + 1 < len(strengths):
            raise loop.Preempted(k + 1, len(strengths), directory)
    return points


def run(data: HostSplits, metric: str, multi_label: bool, path: PathConfig, directory: str,
        identity: dict, should_stop: Callable[[int], bool],
        new_model: Callable[[], object] | None = None) -> dict:
    """The protocol's results: chosen strength, every candidate, test metrics."""
    new_model = new_model or (lambda: logreg.LinearModel(multi_label, path.max_iter, path.tol,
                                                         path.threads))
    points = regularisation_path(data, metric, multi_label, path, directory, identity,
                                 should_stop, new_model)
    best = points[_best(points)]
    (x, y), (xv, yv) = data.train, data.val
    refit = new_model()
    refit.fit(np.concatenate([x, xv]), np.concatenate([y, yv]), best["lambda"])
    xt, yt = data.test()
    test = metrics.test_metrics(multi_label, yt, refit.scores(xt))
    return {"metric": metric, **test, "val_score": best["val_score"],
            "chosen": {"lambda": best["lambda"]},
            "candidates": points,
            "num_train_examples": len(x), "num_val_examples": len(xv),
            "num_test_examples": len(xt), "feature_width": int(x.shape[1])}
