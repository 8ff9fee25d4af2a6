"""Weighted kNN classification of h (Wu et al. 2018, "InstDisc"): the maths, used by the kNN job
(evals/knn_lib.py), the pretraining monitor (evals/monitor.py) and the sweeps.

Each test example's L2-normalised h is compared (cosine) with the h of every training example;
its k nearest neighbours vote for their class with weight exp(sim / T) (k=200, T=0.1 by
default). Inside pretraining, `config.knn_every_steps` logs knn_top1 / knn_top5 with the other
metrics, and, when the run has an online probe, the probe's probe_eval_top1 / probe_eval_top5
on the same eval split (as the official TF2 code's eval/label_top_1_accuracy). No training, no
augmentation: a cheap, hyperparameter-free read of the encoder.

At scale the bank of training features stays sharded over the devices (evals/features.py: each
device holds N / devices rows); each device scores a batch of queries against its rows, keeping
a running top-k as it scans them, and the devices' top-k are merged (all-gather of k candidates
per query and device, then the top-k of those). Memory per device: the bank shard plus
queries x (k + rows per bank batch) similarities; no host ever holds the bank.
"""

import functools
from functools import partial

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from simclr_jax.core.losses import l2_normalize
from simclr_jax.core.parallel import DATA_AXIS
from simclr_jax.data.sources import Source
from simclr_jax.evals import features, jobs
from simclr_jax.evals.features import BANK_SPEC, Bank
from simclr_jax.evals.pretrained import Pretrained


@partial(jax.jit, static_argnames=("num_classes", "k", "temperature"))
def knn_scores(queries: jnp.ndarray, bank: jnp.ndarray, bank_labels: jnp.ndarray, *,
               num_classes: int, k: int, temperature: float) -> jnp.ndarray:
    """Class scores (B, C): sum of exp(cos / T) over each query's k most similar bank rows
    (one dense bank: the sweeps' small in-memory splits)."""
    sim = l2_normalize(queries) @ l2_normalize(bank).T
    top_sim, top_idx = jax.lax.top_k(sim, min(k, bank.shape[0]))
    votes = jax.nn.one_hot(bank_labels[top_idx], num_classes, dtype=jnp.float32)
    return jnp.einsum("bk,bkc->bc", jnp.exp(top_sim / temperature), votes)


def _local_scores(queries, bank, labels, mask, *, num_classes: int, k: int,
                  temperature: float):
    """Per device: its queries (Q/D, d) -> their class scores, against every device's rows."""
    q = l2_normalize(jax.lax.all_gather(queries, DATA_AXIS, tiled=True))  # (Q, d)

    def scan_batch(best, rows):  # running top-k over this device's rows, one bank batch at a time
        h, y, m = rows
        sim = jnp.where(m[None, :], q @ l2_normalize(h).T, -jnp.inf)
        s = jnp.concatenate([best[0], sim], axis=1)
        lab = jnp.concatenate([best[1], jnp.broadcast_to(y, sim.shape)], axis=1)
        s, i = jax.lax.top_k(s, k)
        return (s, jnp.take_along_axis(lab, i, axis=1)), None

    init = (jnp.full((q.shape[0], k), -jnp.inf), jnp.zeros((q.shape[0], k), jnp.int32))
    init = jax.lax.pcast(init, (DATA_AXIS,), to="varying")  # the carry differs per device
    (s, lab), _ = jax.lax.scan(scan_batch, init, (bank, labels, mask))
    s = jax.lax.all_gather(s, DATA_AXIS, axis=1, tiled=True)  # (Q, D * k): every device's
    lab = jax.lax.all_gather(lab, DATA_AXIS, axis=1, tiled=True)
    s, i = jax.lax.top_k(s, k)
    votes = jax.nn.one_hot(jnp.take_along_axis(lab, i, axis=1), num_classes, dtype=jnp.float32)
    scores = jnp.einsum("qk,qkc->qc", jnp.exp(s / temperature), votes)  # exp(-inf) = 0
    rows = queries.shape[0]
    return jax.lax.dynamic_slice_in_dim(scores, jax.lax.axis_index(DATA_AXIS) * rows, rows)


@functools.lru_cache(maxsize=8)
def _batch_sums_fn(mesh, num_classes: int, k: int, temperature: float):
    """fn(train bank arrays, test bank arrays, b) -> exact top-1 / top-5 sums of test batch b."""
    score = jax.shard_map(partial(_local_scores, num_classes=num_classes, k=k,
                                  temperature=temperature), mesh=mesh,
                          in_specs=(P(DATA_AXIS), BANK_SPEC, BANK_SPEC, BANK_SPEC),
                          out_specs=P(DATA_AXIS))

    def sums(bank, labels, mask, test_h, test_labels, test_mask, b):
        scores = score(test_h[b], bank, labels, mask)
        return jobs.metric_sums(scores, test_labels[b], test_mask[b], with_loss=False)

    return jax.jit(sums)


def bank_metrics(train: Bank, test: Bank, *, k: int, temperature: float, mesh
                 ) -> dict[str, float]:
    """Exact kNN top-1 / top-5 of every test example against the sharded training bank."""
    k = min(k, train.num_examples)
    fn = _batch_sums_fn(mesh, train.num_classes, k, temperature)
    args = (train.features, train.labels, train.mask, test.features, test.labels, test.mask)
    fn.lower(*args, 0).compile()
    features.multihost_sync("simclr_jax.knn_compiled")  # gloo gives up on a compiling peer
    metrics = jobs.topk_sums_to_metrics(fn(*args, b) for b in range(test.index.shape[0]))
    return {"knn_top1": metrics["top1"], "knn_top5": metrics["top5"],
            "num_eval_examples": metrics["num_examples"]}


def knn_metrics(train_h, train_labels, test_h, test_labels, *, num_classes: int, k: int,
                temperature: float, global_batch: int, mesh) -> dict[str, float]:
    """bank_metrics of features given on every host (train_h: N x d numpy, ...)."""
    train = features.from_host(train_h, train_labels, num_classes, global_batch, mesh)
    test = features.from_host(test_h, test_labels, num_classes, global_batch, mesh)
    return bank_metrics(train, test, k=k, temperature=temperature, mesh=mesh)


def knn_eval(pre: Pretrained, train: Source, test: Source, *, image_size: int, k: int,
             temperature: float, global_batch: int, mesh,
             caches: tuple[features.CacheSpec | None, features.CacheSpec | None] = (None, None)
             ) -> dict[str, float]:
    """kNN accuracy of `pre`'s h on `test`, the bank being `train` (eval preprocessing)."""
    banks = [features.compute(pre, source, image_size=image_size, global_batch=global_batch,
                              mesh=mesh, cache=cache)
             for source, cache in zip((train, test), caches, strict=True)]
    return bank_metrics(*banks, k=k, temperature=temperature, mesh=mesh)
