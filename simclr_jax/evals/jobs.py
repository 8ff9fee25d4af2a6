"""What the evaluation jobs share: the checkpoints to evaluate (--wait), config and data, frozen
features, exact top-k metrics over padded batches, results.json and the one-line summary."""

import functools
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from etils import epath
from jax.experimental import multihost_utils

from simclr_jax import eval_config
from simclr_jax.core import metric_io, optim, parallel
from simclr_jax.data import builders, eval_input, subsets
from simclr_jax.data.splits import ArraySplit
from simclr_jax.errors import UserError
from simclr_jax.evals import pretrained
from simclr_jax.evals.pretrained import Pretrained

# (pretrained, resolved config, mesh, writer) -> results of one checkpoint
EvaluateFn = Callable[[Pretrained, ml_collections.ConfigDict, jax.sharding.Mesh, object], dict]


# ---- Which checkpoints -------------------------------------------------------------------------

def _agree(value: int) -> int:
    """Process 0's value on every process, so all processes evaluate the same checkpoint."""
    if jax.process_count() == 1:
        return value
    return int(multihost_utils.broadcast_one_to_all(np.int64(value)))


def final_step(pretrain_config: ml_collections.ConfigDict) -> int | None:
    """The last step the pretraining run will checkpoint, or None if it cannot be told."""
    if pretrain_config.num_train_steps > 0:
        return int(pretrain_config.num_train_steps)
    try:
        builder = builders.get_builder(pretrain_config.dataset, pretrain_config.data_dir)
        num_examples = builder.info.splits[pretrain_config.train_split].num_examples
    except (UserError, KeyError, ValueError):
        return None
    return optim.total_steps(pretrain_config, num_examples)[1]


def checkpoints(path: str, wait: bool, timeout_s: float, poll_s: float = 2.0
                ) -> Iterator[str]:
    """Step directories to evaluate: the given one, or with `wait`, the newest each time one
    appears, until the run's final step (or `timeout_s` without a new one)."""
    if not wait:
        yield str(pretrained.resolve_checkpoint(path)[0])
        return
    last, final, idle_since = -1, None, time.time()
    while True:
        steps = [s for s in pretrained.list_steps(path) if s > last]
        step = _agree(steps[-1] if steps else -1)
        if step >= 0:
            if len(steps) > 1:
                logging.info("Skipping superseded checkpoints %s", steps[:-1])
            step_dir = pretrained.checkpoints_root(path) / str(step)
            yield str(step_dir)
            last, idle_since = step, time.time()
            final = final if final is not None else final_step(pretrained.read_config(step_dir))
            if final is not None and step >= final:
                return
        elif time.time() - idle_since > timeout_s:
            if last < 0:
                raise UserError(f"no checkpoint appeared in {path} within "
                                f"--wait_timeout={timeout_s:g} s (config.pretrained)")
            logging.warning("No new checkpoint for %g s; stopping after step %d", timeout_s, last)
            return
        else:
            time.sleep(poll_s)


# ---- Config and data ---------------------------------------------------------------------------

def resolve_config(config: ml_collections.ConfigDict,
                   pretrain_config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A copy of `config` with the data keys left at None taken from the pretraining run."""
    resolved = ml_collections.ConfigDict(config.to_dict())
    for key in eval_config.INHERITED:
        if resolved[key] is None:
            resolved[key] = pretrain_config.get(key)
    return resolved


@functools.lru_cache(maxsize=4)
def _load(dataset: str, split: str, data_dir: str | None, fraction: float, seed: int
          ) -> ArraySplit:
    return subsets.load_train_split(dataset, split, data_dir, fraction, seed)


def load_splits(config: ml_collections.ConfigDict, job: str
                ) -> tuple[ArraySplit | None, ArraySplit]:
    """(training split at config.label_fraction, eval split); both must have labels. With
    config.num_train_steps=0 (nothing trains) the training split is not read: (None, eval)."""
    train = None
    if config.get("num_train_steps", -1) != 0:
        train = _load(config.dataset, config.train_split, config.data_dir,
                      config.label_fraction, config.seed)
    test = _load(config.dataset, config.eval_split, config.data_dir, 1.0, config.seed)
    for name, split in ((config.train_split, train), (config.eval_split, test)):
        if split is not None and split.labels is None:
            raise UserError(
                f"split {name!r} of dataset {config.dataset!r} has no labels: {job} needs a "
                f"labelled dataset (set config.dataset / config.train_split / config.eval_split)")
    return train, test


# ---- Features and metrics ----------------------------------------------------------------------

def to_host(x: jax.Array) -> np.ndarray:
    """A global array's full value on this host."""
    if jax.process_count() == 1:
        return np.asarray(x)
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def features(pre: Pretrained, split: ArraySplit, image_size: int, global_batch: int,
             mesh: jax.sharding.Mesh) -> np.ndarray:
    """h (float32, N x width) of every example of `split`, eval preprocessing, BN in inference."""
    fn = _feature_fn(pre.module)
    out = []
    for batch in eval_input.eval_batches(split, global_batch=global_batch,
                                         image_size=image_size,
                                         process_index=jax.process_index(),
                                         process_count=jax.process_count()):
        images = parallel.global_batch(mesh, {"image": batch["image"]})["image"]
        out.append(to_host(fn(pre.variables, images)))
    # Padding only ever fills the tail of the last global batch.
    return np.concatenate(out)[:len(split)]


@functools.lru_cache(maxsize=8)
def _feature_fn(module) -> Callable:
    return jax.jit(lambda v, x: module.apply(v, x.astype(jnp.float32) / 255.0,
                                             train=False).astype(jnp.float32))


def host_batches(arrays: dict[str, np.ndarray], global_batch: int, mesh: jax.sharding.Mesh
                 ) -> Iterator[dict[str, jax.Array]]:
    """Global batches of host arrays (same rows on every process), padded and masked."""
    n = len(next(iter(arrays.values())))
    idx, mask = eval_input.eval_positions(n, global_batch, jax.process_index(),
                                          jax.process_count())
    for i, m in zip(idx, mask, strict=True):
        yield parallel.global_batch(mesh, {**{k: v[i] for k, v in arrays.items()}, "mask": m})


@functools.partial(jax.jit, static_argnames="with_loss")
def _metric_sums(scores, labels, mask, with_loss=True):
    k = min(5, scores.shape[-1])
    top = jax.lax.top_k(scores, k)[1]
    mask = mask.astype(jnp.float32)
    sums = {"top1": jnp.sum(mask * (top[:, 0] == labels)),
            "top5": jnp.sum(mask * jnp.any(top == labels[:, None], axis=-1)),
            "count": jnp.sum(mask)}
    if with_loss:
        ce = optax.softmax_cross_entropy_with_integer_labels(scores.astype(jnp.float32), labels)
        sums["loss"] = jnp.sum(mask * ce)
    return sums


def topk_metrics(batches: Iterable[tuple[jax.Array, jax.Array, jax.Array]], with_loss=True
                 ) -> dict[str, float]:
    """Exact top-1 / top-5 (and mean cross-entropy) over (scores, labels, mask) batches."""
    total: dict[str, float] = {}
    for scores, labels, mask in batches:
        for key, value in jax.device_get(_metric_sums(scores, labels, mask, with_loss)).items():
            total[key] = total.get(key, 0.0) + float(value)
    count = total.pop("count")
    out = {key: value / count for key, value in total.items()}
    out["num_examples"] = int(count)
    return out


# ---- Results and the command line --------------------------------------------------------------

def summary_line(job: str, results: dict, workdir: str) -> str:
    """One line: job, checkpoint step and the headline accuracies."""
    keys = [k for k in ("top1", "top5", "knn_top1", "knn_top5") if k in results]
    metrics = " ".join(f"{k}={results[k]:.4f}" for k in keys)
    return (f"{job}: step {results['checkpoint_step']} {metrics} on "
            f"{results.get('num_eval_examples', '?')} examples -> "
            f"{os.path.join(workdir, 'results.json')}")


def run_job(job: str, config: ml_collections.ConfigDict, workdir: str, evaluate: EvaluateFn, *,
            wait: bool = False, wait_timeout_s: float = 3600.0, with_head: bool = False
            ) -> dict:
    """Evaluates the checkpoint(s) of config.pretrained; writes results.json and metrics."""
    eval_config.validate(config)
    mesh = parallel.make_mesh()
    parallel.check_global_batch(config.batch_size, mesh)
    parallel.check_global_batch(config.eval_batch_size, mesh)
    builders.hide_accelerators_from_tf()
    epath.Path(workdir).mkdir(parents=True, exist_ok=True)
    writer = metric_io.create_writer(workdir)
    architecture = {"resnet_depth": config.resnet_depth,
                    "width_multiplier": config.width_multiplier}
    history: list[dict] = []
    results: dict = {}
    for step_dir in checkpoints(config.pretrained, wait, wait_timeout_s):
        pre = pretrained.load(step_dir, mesh=mesh, with_head=with_head, architecture=architecture,
                              with_probe=config.get("classifier_from_probe", False))
        resolved = resolve_config(config, pre.config)
        results = {"job": job, "pretrained": step_dir, "checkpoint_step": pre.step,
                   **evaluate(pre, resolved, mesh, writer)}
        history.append(results)
        writer.flush()
        if jax.process_index() == 0:
            doc = {**results, "config": resolved.to_dict(), "pretrain_config": pre.config.to_dict(),
                   "history": history}
            (epath.Path(workdir) / "results.json").write_text(json.dumps(doc, indent=1) + "\n")
            print(summary_line(job, results, workdir), flush=True)
    writer.close()
    return results
