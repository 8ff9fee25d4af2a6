"""Ablation sweeps: the paper's experiments as lists of config variants, run and tabulated (the
library of the command simclr_jax/sweep.py).

    python -m simclr_jax.sweep --experiment=losses --workdir=runs/sweeps/losses --scale=cpu \
        --cifar10_folder=/data/cifar10/train

An experiment is simclr_jax/research/experiments/<NAME>.py with `get_experiment(scale) -> dict`:
  base: the ConfigDict every variant starts from;
  variants: [{'name', 'overrides': {key: value}, 'layers': ('h', 'z'), 'job': 'simclr' |
            'supervised' | 'random_init', 'labels': {...} (row/column of the plot)}];
  evaluation: 'knn' | 'linear' | 'knn,linear' (on frozen features of the named layers);
  plot: {'kind': 'heatmap', 'row': LABEL, 'col': LABEL} or {'kind': 'bars'};
  metric: the column plotted (e.g. 'knn_h').
Each variant runs in <workdir>/variants/<name> (config.json, checkpoints, metrics.jsonl,
results.json). A variant whose results.json says 'ok' is skipped on rerun; a failing variant is
reported, marked 'failed' in the table, and the sweep goes on (it is retried on the next run).
The sweep writes results.csv, results.md and results.png into <workdir>.
"""

import importlib
import json
import pkgutil
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tensorflow as tf
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from simclr_jax.augment import tf_image
from simclr_jax.config import validate
from simclr_jax.core import backend, parallel, train
from simclr_jax.data import splits as data_splits
from simclr_jax.errors import UserError
from simclr_jax.evals import monitor, weighted_knn
from simclr_jax.models import build_model
from simclr_jax.research import experiments, supervised, sweep_report

LAYER_NAMES = ("h", "g1", "g2", "g3")  # head outputs: h, then each projection-head layer


def list_experiments() -> list[str]:
    """Names of the experiments in simclr_jax.research.experiments."""
    return sorted(m.name for m in pkgutil.iter_modules(experiments.__path__)
                  if not m.name.startswith("_"))


def load_experiment(name: str, scale: str) -> dict:
    """research/experiments/<name>.py's get_experiment(scale), checked for the keys we need."""
    if name not in list_experiments():
        raise UserError(f"unknown experiment {name!r} (--experiment): expected one of "
                        f"{', '.join(list_experiments())}")
    module = importlib.import_module(f"{experiments.__name__}.{name}")
    exp = module.get_experiment(scale)
    if not exp.get("variants"):
        raise UserError(f"experiment {name!r} at scale {scale!r} has no variants: add at least "
                        f"one {{'name': ..., 'overrides': {{...}}}} to its 'variants' list")
    names = [v["name"] for v in exp["variants"]]
    if len(set(names)) != len(names):
        raise UserError(f"experiment {name!r} has duplicate variant names: {names}")
    return exp


# --- Evaluation on frozen features (pluggable: name -> fn(train, test) -> accuracy) ----------

def knn_accuracy(train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray],
                 k: int = 200, temperature: float = 0.1) -> float:
    """Weighted kNN top-1 (the kNN job's vote, weighted_knn.knn_scores) of test against train
    features."""
    num_classes = int(max(train[1].max(), test[1].max())) + 1
    correct = 0
    for start in range(0, len(test[0]), 512):
        scores = weighted_knn.knn_scores(test[0][start:start + 512], train[0], train[1],
                                         num_classes=num_classes, k=k,
                                         temperature=temperature)
        correct += int(np.sum(np.asarray(scores).argmax(1) == test[1][start:start + 512]))
    return correct / len(test[0])


def linear_accuracy(train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray]
                    ) -> float:
    """Linear evaluation on frozen features: L2-regularised logistic regression (L-BFGS) on
    standardised features, the usual cheap stand-in for the paper's SGD linear eval."""
    scaler = StandardScaler().fit(train[0])
    clf = LogisticRegression(max_iter=500, C=1.0)
    clf.fit(scaler.transform(train[0]), train[1])
    return float(clf.score(scaler.transform(test[0]), test[1]))


EVALUATORS: dict[str, Callable] = {"knn": knn_accuracy, "linear": linear_accuracy}


# --- Running one variant ----------------------------------------------------------------------

def variant_config(base: ml_collections.ConfigDict, overrides: dict
                   ) -> ml_collections.ConfigDict:
    """base + overrides; an override naming no key is a UserError (a typo would be silent)."""
    config = ml_collections.ConfigDict(base.to_dict())
    for key, value in overrides.items():
        if key not in config:
            raise UserError(f"override {key!r} is not a config key (see simclr_jax/config.py)")
        config[key] = value
    return config


def eval_images(images: np.ndarray, size: int) -> np.ndarray:
    """The evaluation jobs' preprocessing (tf_image.center_crop_resize), as floats in [0, 1]."""
    ds = (tf.data.Dataset.from_tensor_slices(images)
          .map(lambda im: tf_image.center_crop_resize(im, size),
               num_parallel_calls=tf.data.AUTOTUNE).batch(1024))
    return np.concatenate(list(ds.as_numpy_iterator())).astype(np.float32) / 255.0


def layer_features(apply_fn: Callable, images: np.ndarray, batch: int = 500) -> list[np.ndarray]:
    """[h, g1(h), ...] for all images, computed in batches."""
    chunks = [apply_fn(images[i:i + batch]) for i in range(0, len(images), batch)]
    return [np.concatenate([np.asarray(c[j]) for c in chunks]) for j in range(len(chunks[0]))]


def run_variant(variant: dict, exp: dict, vdir: Path, splits: tuple) -> dict:
    """Pretrains (or trains supervised) one variant, then evaluates its frozen features."""
    config = variant_config(exp["base"], variant.get("overrides", {}))
    vdir.mkdir(parents=True, exist_ok=True)
    (vdir / "config.json").write_text(config.to_json_best_effort(indent=2))
    t0 = time.time()
    job = variant.get("job", "simclr")
    result: dict = {}
    if job == "supervised":
        apply_fn, result = supervised.train_and_evaluate(config, str(vdir), splits)
    else:
        model = build_model(config, conv=backend.conv_module(config.conv_impl))
        if job == "random_init":  # reference: the untrained encoder, evaluated the same way
            x = jnp.zeros((2, config.image_size, config.image_size, 3))
            variables = parallel.run_once(lambda k: model.init(k, x, train=False),
                                          jax.random.PRNGKey(config.seed))
        else:
            validate(config)
            state = train.train_and_evaluate(config, str(vdir), monitor=monitor.Monitor)
            variables = {"params": {k: v for k, v in state.params.items() if k != "probe"},
                         "batch_stats": state.batch_stats}

        @jax.jit
        def apply_fn(x):
            return model.apply(variables, x, method=lambda m, x: m.head(
                m.encoder(x, train=False), train=False))

    train_split, test_split = splits
    feats = [layer_features(apply_fn, eval_images(s.images, config.image_size))
             for s in (train_split, test_split)]
    if job == "supervised":  # its own classifier's accuracy, from the logits
        result["supervised_top1"] = float(np.mean(feats[1][1].argmax(1) == test_split.labels))
        feats = [f[:1] for f in feats]
    layers = variant.get("layers", ("h",))
    for layer in layers:
        j = LAYER_NAMES.index(layer) if layer != "z" else len(feats[0]) - 1
        if j >= len(feats[0]):
            raise UserError(f"layer {layer!r} does not exist with proj_head_mode="
                            f"{config.proj_head_mode!r}")
        for name in exp.get("evaluation", "knn").split(","):
            result[f"{name}_{layer}"] = EVALUATORS[name](
                (feats[0][j], train_split.labels), (feats[1][j], test_split.labels))
    result["train_seconds"] = round(time.time() - t0, 1)
    return result


def load_splits(exp: dict) -> tuple:
    """(train, test) ArraySplits of the base config's dataset for evaluation."""
    base = exp["base"]
    return (data_splits.load_split(base.dataset, base.train_split, base.data_dir),
            data_splits.load_split(base.dataset, base.eval_split, base.data_dir))


def run_sweep(exp: dict, workdir: str, *, cifar10_folder: str | None = None,
              log: Callable[[str], None] = print) -> list[dict]:
    """Runs every unfinished variant; returns one row per variant (finished or not).

    `cifar10_folder` is the CIFAR-10 JPEG folder the cpu-scale experiments prepare their
    dataset from (None: $SIMCLR_CIFAR10_FOLDER)."""
    root = Path(workdir).resolve()  # Orbax wants absolute checkpoint paths
    splits, prepared = None, False
    rows = []
    for variant in exp["variants"]:
        vdir = root / "variants" / variant["name"]
        done = vdir / "results.json"
        if done.exists() and json.loads(done.read_text()).get("status") == "ok":
            log(f"[sweep] {variant['name']}: done, skipped")
        else:
            log(f"[sweep] {variant['name']}: running")
            if exp.get("prepare") and not prepared:
                # The sweep's input (the CIFAR folder): bad input stops the sweep with one
                # error, before any variant, instead of failing every variant the same way.
                exp["prepare"](cifar10_folder)
                prepared = True
            try:
                splits = splits or load_splits(exp)
                result = {"status": "ok", **run_variant(variant, exp, vdir, splits)}
            except Exception as e:  # noqa: BLE001  a failing variant must not end the sweep
                message = str(e).splitlines()[0] if str(e) else type(e).__name__
                result = {"status": "failed", "error": f"{type(e).__name__}: {message}"}
                vdir.mkdir(parents=True, exist_ok=True)
                (vdir / "error.log").write_text(traceback.format_exc())
                log(f"[sweep] {variant['name']}: FAILED ({result['error']}); "
                    f"traceback in {vdir / 'error.log'}; continuing")
            done.parent.mkdir(parents=True, exist_ok=True)
            done.write_text(json.dumps(result, indent=2))
        rows.append({"variant": variant["name"], **variant.get("labels", {}),
                     **json.loads(done.read_text())})
    sweep_report.write_all(rows, exp, root)
    return rows
