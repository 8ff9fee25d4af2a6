"""The fine-tuned transfer protocol: the whole network from the pretrained weights, trained by
the fine-tune job's machinery (evals/classifier.py: streamed input, random crop + flip,
checkpointed and resumable), for each (learning rate, weight decay) of the grid on train,
judged on validation; the chosen pair retrained on train + validation and evaluated once on
test (centre crop: 224/256 of the shorter side, resized to the input size).

As in the paper (appendix B.8) the decay values are divided by the learning rate: the
optimiser (core/optim.py) shrinks weights by lr x weight_decay per step, so the per-step
shrink is the grid's value whatever the learning rate. BN momentum is
max(1 - 10 / steps per epoch, 0.9). A finished grid point's validation score is recorded, so a
rerun skips it; an unfinished one resumes from its saved train state.
"""

import dataclasses
import os

import jax
import ml_collections
import numpy as np
from absl import logging

from simclr_jax import eval_config
from simclr_jax.core import metric_io, parallel
from simclr_jax.data import eval_input
from simclr_jax.data.sources import Source
from simclr_jax.evals import classifier
from simclr_jax.evals.pretrained import Pretrained
from simclr_jax.evals.transfer_lib import host_features, metrics, state_files


@dataclasses.dataclass(frozen=True)
class FinetuneConfig:
    """The protocol's knobs (the paper: 20,000 steps of B=256, 7 x 8 grid)."""

    learning_rates: tuple[float, ...]
    weight_decays: tuple[float, ...]
    num_steps: int
    batch_size: int
    eval_batch_size: int
    crop_area_min: float
    image_size: int
    seed: int
    log_every_steps: int
    checkpoint_every_steps: int


def bn_momentum(num_examples: int, batch_size: int) -> float:
    """max(1 - 10 / s, 0.9), s = steps per epoch (the paper's fine-tuning BN momentum)."""
    steps_per_epoch = max(1, num_examples // batch_size)
    return max(1.0 - 10.0 / steps_per_epoch, 0.9)


def classifier_config(fc: FinetuneConfig, lr: float, wd: float, pretrained: str
                      ) -> ml_collections.ConfigDict:
    """The fine-tune job's config for one grid point (whole encoder trained, classifier on h)."""
    c = eval_config.base_config()
    c.pretrained = pretrained
    c.image_size = fc.image_size
    c.crop_area_min = fc.crop_area_min
    c.train_augment = True
    c.fine_tune_after_block = -1
    c.ft_proj_selector = 0
    c.batch_size = fc.batch_size
    c.eval_batch_size = fc.eval_batch_size
    c.num_train_steps = fc.num_steps
    c.warmup_epochs = 0.0
    c.optimizer = "momentum"  # Nesterov, momentum 0.9
    c.learning_rate = lr
    c.weight_decay = wd / lr if lr > 0 else 0.0  # the paper divides decay by lr
    c.seed = fc.seed
    c.log_every_steps = fc.log_every_steps
    c.checkpoint_every_steps = fc.checkpoint_every_steps
    return c


def predict(model, state, source: Source, image_size: int, global_batch: int, mesh
            ) -> tuple[np.ndarray, np.ndarray]:
    """(scores (N, C), labels (N,)) of `source` in one exact pass (eval preprocessing)."""
    apply = jax.jit(lambda v, x: model.apply(v, x, train=False))
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    scores, labels = [], []
    for b in eval_input.eval_batches(source, global_batch=global_batch, image_size=image_size,
                                     process_index=jax.process_index(),
                                     process_count=jax.process_count()):
        g = parallel.global_batch(mesh, {k: b[k] for k in ("image", "label", "mask")})
        mask = host_features.to_host(g["mask"])
        scores.append(host_features.to_host(apply(variables, g["image"]))[mask])
        labels.append(host_features.to_host(g["label"])[mask])
    return np.concatenate(scores), np.concatenate(labels)


def train_one(pre: Pretrained, fc: FinetuneConfig, lr: float, wd: float, train: Source,
              directory: str, mesh):
    """(model, state) fine-tuned on `train` at one grid point; resumable in `directory`."""
    momentum = bn_momentum(len(train), fc.batch_size)
    tuned = dataclasses.replace(pre, module=pre.module.clone(bn_momentum=momentum))
    config = classifier_config(fc, lr, wd, pre.path or "random")
    writer = metric_io.create_writer(directory)
    try:
        return classifier.train_classifier(tuned, config, train, mesh, writer,
                                           workdir=directory)
    finally:
        writer.close()


def _key(lr: float, wd: float) -> str:
    return f"lr_{lr:.3g}_wd_{wd:.3g}"


def run(pre: Pretrained, fc: FinetuneConfig, splits, metric: str, directory: str, mesh,
        identity: dict) -> dict:
    """The protocol's results: chosen (lr, wd), every candidate's validation score, test."""
    record_path = os.path.join(directory, "grid.json")
    saved = state_files.read_json(record_path)
    done = saved["points"] if saved and saved.get("identity") == identity else {}
    for lr in fc.learning_rates:
        for wd in fc.weight_decays:
            key = _key(lr, wd)
            if key in done:
                continue
            model, state = train_one(pre, fc, lr, wd, splits.train,
                                     os.path.join(directory, key), mesh)
            scores, labels = predict(model, state, splits.val, fc.image_size,
                                     fc.eval_batch_size, mesh)
            done[key] = {"learning_rate": lr, "weight_decay": wd,
                         "val_score": metrics.score(metric, labels, scores)}
            logging.info("fine-tune grid %s: val %s=%.4f", key, metric, done[key]["val_score"])
            state_files.write_json(record_path, {"identity": identity, "points": done})
    points = [done[_key(lr, wd)] for lr in fc.learning_rates for wd in fc.weight_decays]
    # Ties: the first in grid order (smaller learning rate, then smaller decay).
    best = max(range(len(points)), key=lambda k: (points[k]["val_score"], -k))
    chosen = points[best]
    model, state = train_one(pre, fc, chosen["learning_rate"], chosen["weight_decay"],
                             splits.train_val, os.path.join(directory, "refit"), mesh)
    scores, labels = predict(model, state, splits.test, fc.image_size, fc.eval_batch_size,
                             mesh)
    return {"metric": metric, **metrics.test_metrics(False, labels, scores),
            "val_score": chosen["val_score"],
            "chosen": {"learning_rate": chosen["learning_rate"],
                       "weight_decay": chosen["weight_decay"]},
            "candidates": points, "num_train_examples": len(splits.train),
            "num_val_examples": len(splits.val), "num_test_examples": len(labels),
            "train_steps": int(state.step),
            "bn_momentum": bn_momentum(len(splits.train_val), fc.batch_size)}
