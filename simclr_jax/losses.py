"""NT-Xent over the global batch.

Each device compares its own 2n anchors with the 2N views of the whole (all-gathered) batch, so
per-device logits are (2n, 2N), never (2N, 2N). all_gather is differentiable (its transpose is a
reduce-scatter), so gradients flow back to the device that produced each view.
"""

from functools import partial

import jax
import jax.numpy as jnp
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

# A large finite number rather than -inf: exp underflows to 0 and gradients stay NaN-free.
LARGE_NUM = 1e9


def l2_normalize(x: jnp.ndarray, eps: float = 1e-12) -> jnp.ndarray:
    """x / ||x|| along the last axis."""
    return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), eps))


def nt_xent_local(z1: jnp.ndarray, z2: jnp.ndarray, z1_all: jnp.ndarray, z2_all: jnp.ndarray,
                  offset: jnp.ndarray | int, temperature: float):
    """NT-Xent terms for local anchors z1, z2 (n, d) against the global views (N, d).

    `offset` is the global index of this device's first example. Returns the per-anchor losses
    (2n,), the logits (2n, 2N) and the index of each anchor's positive.
    """
    n, total = z1.shape[0], z1_all.shape[0]
    positives = offset + jnp.arange(n)
    self_mask = jax.nn.one_hot(positives, total, dtype=z1.dtype) * LARGE_NUM
    logits_aa = z1 @ z1_all.T / temperature - self_mask
    logits_bb = z2 @ z2_all.T / temperature - self_mask
    logits_ab = z1 @ z2_all.T / temperature
    logits_ba = z2 @ z1_all.T / temperature
    # Anchor i of view 1: positive is view 2 of the same image, at column `positives[i]`.
    logits_a = jnp.concatenate([logits_ab, logits_aa], axis=1)
    logits_b = jnp.concatenate([logits_ba, logits_bb], axis=1)
    logits = jnp.concatenate([logits_a, logits_b], axis=0)
    labels = jnp.concatenate([positives, positives])
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    losses = -jnp.take_along_axis(log_probs, labels[:, None], axis=1)[:, 0]
    return losses, logits, labels


def contrastive_metrics(logits: jnp.ndarray, labels: jnp.ndarray) -> dict[str, jnp.ndarray]:
    """Per-anchor top-1 accuracy (positive ranked first) and softmax entropy."""
    probs = jax.nn.softmax(logits, axis=-1)
    entropy = -jnp.sum(probs * jnp.log(probs + 1e-12), axis=-1)
    accuracy = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
    return {"contrast_acc": accuracy, "contrast_entropy": entropy}


def nt_xent(z1: jnp.ndarray, z2: jnp.ndarray, temperature: float, mesh: Mesh | None = None,
            axis: str = "data", normalize: bool = True):
    """Mean NT-Xent over all 2N anchors of the global batch, plus contrastive metrics.

    Without a mesh the whole batch is one shard. With a mesh, z1/z2 are batch-sharded along
    `axis` and the loss is computed per device with shard_map + all_gather.
    """
    if normalize:
        z1, z2 = l2_normalize(z1), l2_normalize(z2)

    def local(z1, z2, gather: bool):
        if gather:
            z1_all = jax.lax.all_gather(z1, axis, tiled=True)
            z2_all = jax.lax.all_gather(z2, axis, tiled=True)
            offset = jax.lax.axis_index(axis) * z1.shape[0]
        else:
            z1_all, z2_all, offset = z1, z2, 0
        losses, logits, labels = nt_xent_local(z1, z2, z1_all, z2_all, offset, temperature)
        metrics = {k: jnp.mean(v) for k, v in contrastive_metrics(logits, labels).items()}
        loss = jnp.mean(losses)
        if gather:
            # pmean inside the differentiated function: a psum'd loss would scale grads by N.
            loss = jax.lax.pmean(loss, axis)
            metrics = jax.lax.pmean(metrics, axis)
        return loss, metrics

    if mesh is None:
        return local(z1, z2, gather=False)
    sharded = jax.shard_map(partial(local, gather=True), mesh=mesh,
                            in_specs=(P(axis), P(axis)), out_specs=(P(), P()))
    return sharded(z1, z2)
