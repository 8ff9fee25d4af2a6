"""What the evaluation jobs share: the checkpoints to evaluate (--wait), config and data (streamed
Sources, never materialised), feature caches, exact top-k metrics over padded batches,
results.json, preemption and the one-line summary."""

import dataclasses
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
from simclr_jax.core import checkpointing, metric_io, optim, parallel, workdir_lock
from simclr_jax.data import builders, sources, subsets
from simclr_jax.data.sources import Source
from simclr_jax.errors import UserError
from simclr_jax.evals import features, loop, pretrained
from simclr_jax.evals.pretrained import Pretrained

# (pretrained, resolved config, mesh, writer, eval workdir) -> results of one checkpoint
EvaluateFn = Callable[[Pretrained, ml_collections.ConfigDict, jax.sharding.Mesh, object, str],
                      dict]


# ---- Which checkpoints -------------------------------------------------------------------------

def _agree(value: int) -> int:
    """Process 0's value on every process, so all processes evaluate the same checkpoint."""
    if jax.process_count() == 1:
        return value
    return int(multihost_utils.broadcast_one_to_all(np.int64(value)))


def _agree_damage(step_dir) -> str:
    """checkpointing.damage of process 0, on every process ('damaged' on the others)."""
    why = checkpointing.damage(step_dir) if jax.process_index() == 0 else ""
    return "damaged" if _agree(int(bool(why))) and not why else why


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
    last, final, idle_since, damaged = -1, None, time.time(), set()
    while True:
        steps = [s for s in pretrained.list_steps(path) if s > last and s not in damaged]
        step = _agree(steps[-1] if steps else -1)
        if step >= 0 and (why := _agree_damage(pretrained.checkpoints_root(path) / str(step))):
            logging.warning("Skipping checkpoint step %d of %s: it is unreadable (%s)", step,
                            path, why)
            damaged.add(step)
            continue
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
            resolved[key] = pretrain_config[key]
    return resolved


@dataclasses.dataclass(frozen=True)
class Splits:
    """The Sources of one evaluation: `train` for training (at config.label_fraction; a
    streamed split: this process's equal shard), `train_eval` the same examples for one exact
    pass (the same object unless streamed), `test` (config.eval_split, exact passes)."""

    train: Source | None  # None: config.num_train_steps=0, nothing trains
    train_eval: Source | None
    test: Source


def num_train_examples(splits: Splits) -> int:
    """Examples of the training split at config.label_fraction (0 when it is not read)."""
    return len(splits.train_eval) if splits.train_eval is not None else 0


def load_splits(config: ml_collections.ConfigDict, job: str, *, bank: bool = False) -> Splits:
    """The evaluation's splits, opened (not read); both must have labels. With
    config.num_train_steps=0 (nothing trains) the training split is not opened, unless it is
    a kNN bank (`bank`)."""
    where = {"process_index": jax.process_index(), "process_count": jax.process_count()}
    train = train_eval = None
    if bank or config.num_train_steps != 0:
        # Process 0 first: the first use of an embedded dataset prepares it in data_dir.
        train = parallel.process_0_first(
            lambda: subsets.train_source(config, config.train_split, **where))
        train_eval = (train if train.random_access else
                      subsets.train_source(config, config.train_split, for_eval=True, **where))
    test = parallel.process_0_first(
        lambda: sources.open_source(config, config.eval_split, for_eval=True, **where))
    for name, split in ((config.train_split, train), (config.eval_split, test)):
        if split is not None and split.num_classes == 0:
            raise UserError(
                f"split {name!r} of dataset {config.dataset!r} has no labels: {job} needs a "
                f"labelled dataset (set config.dataset / config.train_split / config.eval_split)")
    return Splits(train=train, train_eval=train_eval, test=test)


def feature_cache(workdir: str | None, config: ml_collections.ConfigDict, pre: Pretrained,
                  which: str) -> features.CacheSpec | None:
    """The on-disk cache of the 'train' or 'eval' split's features (None without a workdir)."""
    if workdir is None:
        return None
    train = which == "train"
    data = {"dataset": config.dataset, "data_dir": config.data_dir,
            "split": config.train_split if train else config.eval_split,
            "label_fraction": config.label_fraction if train else 1.0,
            "subset_seed": config.seed if train and config.label_fraction < 1 else None,
            "image_size": config.image_size, "folder_labels": config.folder_labels,
            "skip_corrupt_images": config.skip_corrupt_images}
    return features.cache_spec(workdir, which, pre, data)


# ---- Metrics -----------------------------------------------------------------------------------

def metric_sums(scores, labels, mask, with_loss=True) -> dict[str, jax.Array]:
    """Masked sums of top-1 / top-5 hits (and cross-entropy) of one batch (traceable)."""
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


_metric_sums = jax.jit(metric_sums, static_argnames="with_loss")


def topk_sums_to_metrics(sums: Iterable[dict[str, jax.Array]]) -> dict[str, float]:
    """Per-batch metric_sums -> exact means over every unmasked example (+ 'num_examples')."""
    total: dict[str, float] = {}
    for batch in sums:
        for key, value in jax.device_get(batch).items():
            total[key] = total.get(key, 0.0) + float(value)
    count = total.pop("count")
    out = {key: value / count for key, value in total.items()}
    out["num_examples"] = int(count)
    return out


def topk_metrics(batches: Iterable[tuple[jax.Array, jax.Array, jax.Array]], with_loss=True
                 ) -> dict[str, float]:
    """Exact top-1 / top-5 (and mean cross-entropy) over (scores, labels, mask) batches."""
    return topk_sums_to_metrics(_metric_sums(scores, labels, mask, with_loss=with_loss)
                                for scores, labels, mask in batches)


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
    parallel.check_global_batch(config.eval_batch_size, mesh, "eval_batch_size")
    builders.hide_accelerators_from_tf()
    epath.Path(workdir).mkdir(parents=True, exist_ok=True)
    # One job per workdir: a second one would interleave results.json and metrics.
    with workdir_lock.locked(str(checkpointing.absolute(workdir))):
        return _evaluate_checkpoints(job, config, workdir, evaluate, mesh, wait=wait,
                                     wait_timeout_s=wait_timeout_s, with_head=with_head)


def _evaluate_checkpoints(job, config, workdir, evaluate, mesh, *, wait, wait_timeout_s,
                          with_head) -> dict:
    writer = metric_io.create_writer(workdir)
    architecture = {"resnet_depth": config.resnet_depth,
                    "width_multiplier": config.width_multiplier}
    history: list[dict] = []
    results: dict = {}
    try:
        for step_dir in checkpoints(config.pretrained, wait, wait_timeout_s):
            pre = pretrained.load(step_dir, mesh=mesh, with_head=with_head,
                                  architecture=architecture,
                                  with_probe=config.classifier_from_probe)
            resolved = resolve_config(config, pre.config)
            results = {"job": job, "pretrained": step_dir, "checkpoint_step": pre.step,
                       **evaluate(pre, resolved, mesh, writer, workdir)}
            history.append(results)
            writer.flush()
            if jax.process_index() == 0:
                doc = {**results, "config": resolved.to_dict(),
                       "pretrain_config": pre.config.to_dict(), "history": history}
                (epath.Path(workdir) / "results.json").write_text(json.dumps(doc, indent=1)
                                                                  + "\n")
                print(summary_line(job, results, workdir), flush=True)
    except loop.Preempted as notice:
        logging.warning("%s: %s", job, notice)
        if jax.process_index() == 0:
            print(f"{job}: {notice}", flush=True)
        results = {"job": job, "preempted_at_step": notice.step}
    finally:
        writer.close()
    return results
