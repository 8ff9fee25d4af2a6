"""Memory-bounded NT-Xent: the same loss as core/losses.py, in blocks of the gathered keys.

The plain loss holds each device's logits against the whole global batch, (2n, 2N) floats, and
autodiff keeps several of them (logits, softmax, their gradient): at global batch 64k on 8
devices that is 8 GB per array. Here the 2N gathered views are visited in blocks of
`chunk_size` columns with an online log-sum-exp (running max, rescaled sum), and a custom VJP
recomputes each block's softmax in the backward pass from the saved log-sum-exp, so per-device
memory is O(2n x chunk_size) besides the gathered (2N, d) embeddings themselves.

Value and gradients equal the plain loss (tests/core/test_chunked_loss.py, also sharded on 8
devices); the official contrast_acc and contrast_entropy too (over logits_ab, also in blocks).
Only NT-Xent is chunked (config.loss_chunk_size > 0 needs config.loss='nt_xent'). Written here
because no maintained JAX library offers a blockwise contrastive loss over an all-gathered
batch with a recomputing backward pass.
"""

from functools import partial

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from simclr_jax.core.losses import LARGE_NUM, LOSS_REDUCTIONS, l2_normalize, over_global_batch


def _blocks(keys: jnp.ndarray, chunk: int) -> tuple[jnp.ndarray, int]:
    """keys (K, d) zero-padded to a multiple of chunk and split: (K / chunk, chunk, d)."""
    total = keys.shape[0]
    num = -(-total // chunk)
    keys = jnp.pad(keys, ((0, num * chunk - total), (0, 0)))
    return keys.reshape(num, chunk, keys.shape[1]), total


def _block_logits(q, block, index, self_col, total, temperature):
    """Logits of anchors q (m, d) against key block `index` (chunk, d); the anchor's own view
    and the padding columns are masked with -LARGE_NUM, as the plain loss masks its own view."""
    cols = index * block.shape[0] + jnp.arange(block.shape[0])
    logits = q @ block.T / temperature
    masked = (cols[None, :] == self_col[:, None]) | (cols[None, :] >= total)
    return jnp.where(masked, logits - LARGE_NUM, logits)


def _forward(q, keys, self_col, pos_col, temperature, chunk):
    """Per anchor row, over all key columns but its own view: (log-sum-exp, positive logit)."""
    blocks, total = _blocks(keys, chunk)

    def body(carry, xs):
        m, s, pos = carry
        index, block = xs
        logits = _block_logits(q, block, index, self_col, total, temperature)
        m_new = jnp.maximum(m, jnp.max(logits, axis=1))
        s = s * jnp.exp(m - m_new) + jnp.sum(jnp.exp(logits - m_new[:, None]), axis=1)
        cols = index * block.shape[0] + jnp.arange(block.shape[0])
        pos = pos + jnp.sum(jnp.where(cols[None, :] == pos_col[:, None], logits, 0.0), axis=1)
        return (m_new, s, pos), None

    # Derived from q (not jnp.zeros) so that under shard_map the carry is device-varying like
    # the values the scan body puts in it.
    zeros = q[:, 0] * 0
    (m, s, pos), _ = jax.lax.scan(body, (zeros - jnp.inf, zeros, zeros),
                                  (jnp.arange(blocks.shape[0]), blocks))
    return m + jnp.log(s), pos


@partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def chunked_logits(q: jnp.ndarray, keys: jnp.ndarray, self_col: jnp.ndarray,
                   pos_col: jnp.ndarray, temperature: float, chunk: int):
    """Per anchor i, with logits q_i . k_j / temperature over all keys j but self_col[i]:
    (log-sum-exp, the logit of column pos_col[i])."""
    return _forward(q, keys, self_col, pos_col, temperature, chunk)


def _chunked_fwd(q, keys, self_col, pos_col, temperature, chunk):
    out = _forward(q, keys, self_col, pos_col, temperature, chunk)
    return out, (q, keys, self_col, pos_col, out[0])


def _chunked_bwd(temperature, chunk, residuals, cotangents):
    """Recomputes each block: d lse_i = sum_j p_ij d logit_ij, d pos_i = d logit_i,pos_col;
    d logit_ij = q_i . d k_j / temperature (and k_j . d q_i / temperature)."""
    q, keys, self_col, pos_col, lse = residuals
    g_lse, g_pos = cotangents
    blocks, total = _blocks(keys, chunk)

    def body(dq, xs):
        index, block = xs
        logits = _block_logits(q, block, index, self_col, total, temperature)
        cols = index * block.shape[0] + jnp.arange(block.shape[0])
        d_logits = (g_lse[:, None] * jnp.exp(logits - lse[:, None])
                    + jnp.where(cols[None, :] == pos_col[:, None], g_pos[:, None], 0.0))
        d_logits = d_logits / temperature  # (m, chunk)
        return dq + d_logits @ block, d_logits.T @ q

    dq, dkeys = jax.lax.scan(body, q * 0, (jnp.arange(blocks.shape[0]), blocks))
    dkeys = dkeys.reshape(-1, keys.shape[1])[:total]
    return dq, dkeys, None, None


chunked_logits.defvjp(_chunked_fwd, _chunked_bwd)


def contrast_metrics(q1: jnp.ndarray, keys2: jnp.ndarray, pos_col: jnp.ndarray,
                     temperature: float, chunk: int) -> dict[str, jnp.ndarray]:
    """The official contrast_acc / contrast_entropy (losses.contrastive_metrics) per view-1
    anchor, over logits_ab (the anchors q1 against the gathered view-2 keys) in key blocks: one
    pass for the log-sum-exp, the positive and the largest other logit, one for the entropy
    (the official 1e-8 inside the log needs the probabilities themselves)."""
    blocks, total = _blocks(keys2, chunk)

    def block_logits(index, block):
        cols = index * block.shape[0] + jnp.arange(block.shape[0])
        logits = q1 @ block.T / temperature
        return cols, jnp.where(cols[None, :] >= total, -jnp.inf, logits)

    def first(carry, xs):
        m, s, pos, neg = carry
        cols, logits = block_logits(*xs)
        m_new = jnp.maximum(m, jnp.max(logits, axis=1))
        s = s * jnp.exp(m - m_new) + jnp.sum(jnp.exp(logits - m_new[:, None]), axis=1)
        is_pos = cols[None, :] == pos_col[:, None]
        pos = pos + jnp.sum(jnp.where(is_pos, logits, 0.0), axis=1)
        neg = jnp.maximum(neg, jnp.max(jnp.where(is_pos, -jnp.inf, logits), axis=1))
        return (m_new, s, pos, neg), None

    def second(entropy, xs):
        _, logits = block_logits(*xs)
        p = jnp.exp(logits - lse[:, None])
        return entropy - jnp.sum(p * jnp.log(p + 1e-8), axis=1), None

    xs = (jnp.arange(blocks.shape[0]), blocks)
    zeros = q1[:, 0] * 0
    (m, s, pos, neg), _ = jax.lax.scan(first, (zeros - jnp.inf, zeros, zeros, zeros - jnp.inf),
                                       xs)
    lse = m + jnp.log(s)
    entropy, _ = jax.lax.scan(second, zeros, xs)
    # argmax == positive, but for exact ties (which argmax resolves by column order)
    return {"contrast_acc": (pos > neg).astype(jnp.float32), "contrast_entropy": entropy}


def nt_xent_chunked(z1: jnp.ndarray, z2: jnp.ndarray, temperature: float, chunk_size: int,
                    mesh: Mesh | None = None, axis: str = "data", normalize: bool = True,
                    reduction: str = "sum"):
    """losses.contrastive_loss(..., loss='nt_xent', reduction=reduction) computed in key
    blocks of `chunk_size`: (the loss, {'contrast_acc', 'contrast_entropy'})."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if reduction not in LOSS_REDUCTIONS:
        raise ValueError(f"unknown reduction {reduction!r}; expected one of {LOSS_REDUCTIONS}")
    scale = 2.0 if reduction == "sum" else 1.0  # as losses.contrastive_loss
    if normalize:
        z1, z2 = l2_normalize(z1), l2_normalize(z2)

    def per_device(z1, z2, z1_all, z2_all, offset):
        n, total = z1.shape[0], z1_all.shape[0]
        # Keys: all 2N views [view 1 of every image; view 2 of every image]. A view-1 anchor of
        # global image g is column g itself (masked) and has its positive at N + g; view 2 the
        # other way round.
        keys = jnp.concatenate([z1_all, z2_all])
        q = jnp.concatenate([z1, z2])
        own = offset + jnp.arange(n)
        self_col = jnp.concatenate([own, own + total])
        pos_col = jnp.concatenate([own + total, own])
        lse, positive = chunked_logits(q, keys, self_col, pos_col, temperature, chunk_size)
        metrics = contrast_metrics(jax.lax.stop_gradient(z1), jax.lax.stop_gradient(z2_all),
                                   own, temperature, chunk_size)
        return scale * jnp.mean(lse - positive), {k: jnp.mean(v) for k, v in metrics.items()}

    return over_global_batch(per_device, z1, z2, mesh, axis)
