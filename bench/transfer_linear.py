"""Speed of the linear transfer protocol's regularisation path (evals/transfer_lib/logreg.py):
scikit-learn L-BFGS along 45 log-spaced strengths, warm-started, on synthetic features of a
given size; prints one JSON line per point and a summary.

    # CIFAR-10 size: 50,000 x 512, 10 classes
    python bench/transfer_linear.py
    # SUN397 size, the first points timed on a subsample, the path extrapolated
    python bench/transfer_linear.py --n=100000 --d=2048 --classes=397 --points=3 \\
        --subsample=20000
    # the same on the JAX devices (optax L-BFGS; an accelerator where there is one)
    python bench/transfer_linear.py --solver=device

Features are ReLU'd class centres plus noise (non-negative like pooled ResNet features, classes
overlapping so the path does not converge in one iteration). `--points` fits only the first
points of the 45-value path (strongest first, as the protocol does) and extrapolates the rest
from their time per L-BFGS iteration; `--subsample` times a smaller n and scales by n (each
L-BFGS iteration is a pass over the data: time per iteration is linear in n).
"""

import json
import time

import numpy as np
from absl import app, flags

from simclr_jax.core import parallel
from simclr_jax.evals.transfer_lib import lbfgs_device, logreg

flags.DEFINE_integer("n", 50000, "Training examples.")
flags.DEFINE_integer("d", 512, "Feature width.")
flags.DEFINE_integer("classes", 10, "Classes.")
flags.DEFINE_integer("points", 45, "Fit the first this many of the 45 strengths.")
flags.DEFINE_integer("subsample", 0, "Time on this many examples instead (0: n).")
flags.DEFINE_integer("max_iter", 1000, "L-BFGS iterations per fit (transfer default).")
flags.DEFINE_float("tol", 1e-4, "L-BFGS tolerance (transfer default).")
flags.DEFINE_integer("threads", 0, "Threads of the fit (0: every core).")
flags.DEFINE_enum("solver", "sklearn", ["sklearn", "device"],
                  "sklearn (host) or device (optax L-BFGS on the JAX devices).")
FLAGS = flags.FLAGS


def features(n: int, d: int, classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    # One set of class centres for every split; `seed` draws the examples.
    centres = np.random.default_rng(1234).normal(size=(classes, d)).astype(np.float32)
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    x = np.maximum(centres[y] * 0.05 + rng.normal(size=(n, d)).astype(np.float32), 0)
    return x, y


def main(argv) -> None:
    del argv
    n = FLAGS.subsample or FLAGS.n
    x, y = features(n, FLAGS.d, FLAGS.classes)
    xv, yv = features(max(1000, n // 5), FLAGS.d, FLAGS.classes, seed=1)
    strengths = logreg.lambdas(45, 1e-6, 1e5)[:FLAGS.points]
    if FLAGS.solver == "device":
        model = lbfgs_device.DeviceLinearModel(FLAGS.classes, FLAGS.max_iter, FLAGS.tol,
                                               parallel.make_mesh())
    else:
        model = logreg.LinearModel(multi_label=False, max_iter=FLAGS.max_iter, tol=FLAGS.tol,
                                   threads=FLAGS.threads)
    total, iters = 0.0, 0
    for k, lam in enumerate(strengths):
        t0 = time.perf_counter()
        model.fit(x, y, float(lam))
        dt = time.perf_counter() - t0
        total, iters = total + dt, iters + model.iterations
        acc = float(np.mean(model.scores(xv).argmax(1) == yv))
        print(json.dumps({"point": k, "lambda": float(lam), "seconds": round(dt, 2),
                          "lbfgs_iterations": model.iterations, "val_top1": round(acc, 4)}),
              flush=True)
    per_iter = total / max(iters, 1)
    scale = FLAGS.n / n
    summary = {"solver": FLAGS.solver, "threads": FLAGS.threads, "n": FLAGS.n, "timed_n": n,
               "d": FLAGS.d, "classes": FLAGS.classes,
               "points_fitted": len(strengths), "seconds": round(total, 1),
               "lbfgs_iterations": iters, "seconds_per_iteration": round(per_iter, 4)}
    if len(strengths) < 45 or scale != 1:
        # The remaining points: as many iterations per point as the fitted ones took on
        # average (warm starts make the weakly regularised end slower: a lower bound there).
        per_point = iters / len(strengths)
        summary["extrapolated_path_minutes"] = round(per_iter * scale * per_point * 45 / 60, 1)
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    app.run(main)
