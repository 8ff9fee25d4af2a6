"""NT-Xent (and the paper's alternative losses) over the global batch.

Each device compares its own 2n anchors with the 2N views of the whole (all-gathered) batch, so
per-device logits are (2n, 2N), never (2N, 2N). all_gather is differentiable (its transpose is a
reduce-scatter), so gradients flow back to the device that produced each view.

Scale (`reduction`): the official objective (`objective.py`, `add_contrastive_loss`) is
loss_a + loss_b, the mean over the view-1 anchors plus the mean over the view-2 anchors ('sum',
the default); 'mean' averages over all 2N anchors, half of it. The scale matters under LARS:
BN parameters and biases get no trust ratio, so their step scales with it, and the kernels'
weight decay weighs twice as much against a halved loss.
"""


import jax
import jax.numpy as jnp
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

# A large finite number rather than -inf: exp underflows to 0 and gradients stay NaN-free.
LARGE_NUM = 1e9
LOSS_REDUCTIONS = ("sum", "mean")  # official sum of the two directions' means | their mean


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
    """The official contrast_acc / contrast_entropy (TF1 model.py, TF2 metrics.py), per anchor.

    Both read only logits_ab, the view-1 anchors against the (global) view-2 embeddings: acc is
    whether the anchor's own view 2 is its most similar view 2; entropy is that of
    softmax(logits_ab), with the official 1e-8 inside the log. `logits` and `labels` are
    nt_xent_local's: the first half of the rows are the view-1 anchors, and the first N
    columns of each row are logits_ab.
    """
    n, total = logits.shape[0] // 2, logits.shape[1] // 2
    logits_ab, positives = logits[:n, :total], labels[:n]
    probs = jax.nn.softmax(logits_ab, axis=-1)
    entropy = -jnp.sum(probs * jnp.log(probs + 1e-8), axis=-1)
    accuracy = (jnp.argmax(logits_ab, axis=-1) == positives).astype(jnp.float32)
    return {"contrast_acc": accuracy, "contrast_entropy": entropy}


def nt_xent(z1: jnp.ndarray, z2: jnp.ndarray, temperature: float, mesh: Mesh | None = None,
            axis: str = "data", normalize: bool = True, reduction: str = "sum"):
    """NT-Xent over the global batch (`reduction`: the official 'sum' of the two directions'
    means, or their 'mean'), plus contrastive metrics.

    Without a mesh the whole batch is one shard. With a mesh, z1/z2 are batch-sharded along
    `axis` and the loss is computed per device with shard_map + all_gather.
    """
    return contrastive_loss(z1, z2, temperature, mesh, axis, normalize, loss="nt_xent",
                            reduction=reduction)


# --- Alternative losses of the paper's Table 4 (NT-Logistic, margin triplet) -----------------
#
# Both reuse nt_xent_local's (2n, 2N) logits = sim / temperature: column `labels[i]` holds
# anchor i's positive and column `labels[i] + N` its own view (masked with -LARGE_NUM); the
# other 2N - 2 columns are the negatives.

LOSSES = ("nt_xent", "nt_logistic", "margin_triplet")


def negatives_mask(logits: jnp.ndarray, labels: jnp.ndarray) -> jnp.ndarray:
    """1 for the 2N - 2 negatives of each anchor row, 0 for its positive and itself."""
    total = logits.shape[1] // 2
    return (1.0 - jax.nn.one_hot(labels, 2 * total, dtype=logits.dtype)
            - jax.nn.one_hot(labels + total, 2 * total, dtype=logits.dtype))


def nt_logistic_terms(logits: jnp.ndarray, labels: jnp.ndarray) -> jnp.ndarray:
    """-log σ(s+/τ) - mean_neg log σ(-s-/τ) per anchor.

    The negatives are re-weighted to a total weight of 1 (their mean, not their sum): with
    2N - 2 negatives per positive the summed form is dominated by the negatives.
    """
    mask = negatives_mask(logits, labels)
    positive = jnp.take_along_axis(logits, labels[:, None], axis=1)[:, 0]
    negative = jnp.sum(mask * jax.nn.log_sigmoid(-logits), axis=1) / jnp.sum(mask, axis=1)
    return -jax.nn.log_sigmoid(positive) - negative


def margin_triplet_terms(logits: jnp.ndarray, labels: jnp.ndarray, margin: float
                         ) -> jnp.ndarray:
    """mean_neg max(s-/τ - s+/τ + m, 0) per anchor (τ = 1 gives the paper's form)."""
    mask = negatives_mask(logits, labels)
    positive = jnp.take_along_axis(logits, labels[:, None], axis=1)
    hinge = jax.nn.relu(logits - positive + margin)
    return jnp.sum(mask * hinge, axis=1) / jnp.sum(mask, axis=1)


def contrastive_loss(z1: jnp.ndarray, z2: jnp.ndarray, temperature: float,
                     mesh: Mesh | None = None, axis: str = "data", normalize: bool = True,
                     loss: str = "nt_xent", margin: float = 0.5, reduction: str = "sum"):
    """`loss` (one of LOSSES) over the global batch, plus metrics: with reduction='sum' (the
    official objective) mean over the view-1 anchors + mean over the view-2 anchors, with
    'mean' the mean over all 2N anchors.

    Without a mesh the whole batch is one shard. With a mesh, z1/z2 are batch-sharded along
    `axis`: each device's anchors against the all-gathered views of every device, so per-device
    logits are local x global and gradients flow back through the gather.
    """
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; expected one of {LOSSES}")
    if reduction not in LOSS_REDUCTIONS:
        raise ValueError(f"unknown reduction {reduction!r}; expected one of {LOSS_REDUCTIONS}")
    # Both directions have n anchors per device, so their sum of means is 2x the mean.
    scale = 2.0 if reduction == "sum" else 1.0
    if normalize:
        z1, z2 = l2_normalize(z1), l2_normalize(z2)

    def per_device(z1, z2, z1_all, z2_all, offset):
        terms, logits, labels = nt_xent_local(z1, z2, z1_all, z2_all, offset, temperature)
        if loss == "nt_logistic":
            terms = nt_logistic_terms(logits, labels)
        elif loss == "margin_triplet":
            terms = margin_triplet_terms(logits, labels, margin)
        metrics = {k: jnp.mean(v) for k, v in contrastive_metrics(logits, labels).items()}
        return scale * jnp.mean(terms), metrics

    return over_global_batch(per_device, z1, z2, mesh, axis)


def over_global_batch(per_device, z1: jnp.ndarray, z2: jnp.ndarray, mesh: Mesh | None,
                      axis: str = "data"):
    """(loss, metrics) of `per_device(z1, z2, z1_all, z2_all, offset)` over the global batch.

    With a mesh, z1/z2 are batch-sharded along `axis`: each device gets its own views and the
    all-gathered views of every device (offset: the global index of its first example), and
    the per-device means are averaged. Without one, the whole batch is one shard.
    """
    def local(z1, z2):
        z1_all = jax.lax.all_gather(z1, axis, tiled=True)
        z2_all = jax.lax.all_gather(z2, axis, tiled=True)
        value, metrics = per_device(z1, z2, z1_all, z2_all,
                                    jax.lax.axis_index(axis) * z1.shape[0])
        # pmean inside the differentiated function: a psum'd loss would scale grads by N.
        return jax.lax.pmean(value, axis), jax.lax.pmean(metrics, axis)

    if mesh is None:
        return per_device(z1, z2, z1, z2, 0)
    sharded = jax.shard_map(local, mesh=mesh, in_specs=(P(axis), P(axis)),
                            out_specs=(P(), P()))
    return sharded(z1, z2)
