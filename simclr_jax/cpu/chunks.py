"""A batch in cache-sized chunks: the CPU convolutions' working sets kept out of DRAM.

Every stage of the CPU convolutions (cpu/winograd.py, cpu/conv.py) is memory-bound at
ResNet sizes: Winograd's transformed input and product are 2.25x the activations, a strided
3x3 im2col's columns 2.25x too. Run over the whole batch, each stage streams its operands
through DRAM; run over a chunk of images that fits in the caches, the next stage finds them
there. Measured on the 2-core dev machine (bench/conv_layers.py): Winograd 2x faster at
32x32x16 and 16x16x32, strided im2col 1.3-2x. Below a few hundred KiB a chunk the matmuls get
too small, and a kernel larger than the activations gains nothing: hence the floor and the
kernel term. CPU only, like the convolutions that use it. No library does this for JAX.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp


def num_chunks(x_shape: tuple[int, ...], kernel_bytes: int, itemsize: int,
               min_bytes: int) -> int:
    """How many chunks the batch of x (N, ...) goes through: chunks of at least
    max(min_bytes, kernel_bytes / 4) of x, and a divisor of the per-device batch (so that under
    a batch-sharded jit every device holds a slice of every chunk; see fold)."""
    n, per_image = x_shape[0], itemsize
    for d in x_shape[1:]:
        per_image *= d
    devices = jax.device_count()
    per_device = n // devices if n % devices == 0 else n
    chunks = max(1, per_device * per_image // max(min_bytes, kernel_bytes // 4))
    while per_device % chunks:
        chunks -= 1
    return chunks


def fold(fn: Callable, x: jnp.ndarray, chunks: int, init):
    """carry = fn(chunk of x, p, carry) for p in range(chunks); chunk p holds the images p,
    p + chunks, p + 2 chunks, ... Strided rather than contiguous: the reshape to
    (N / chunks, chunks, ...) is free, and a batch sharded over devices stays sharded on its
    first axis, so each device computes its own images of every chunk."""
    xs = x.reshape(-1, chunks, *x.shape[1:])
    return jax.lax.fori_loop(0, chunks, lambda p, c: fn(chunk(xs, p), p, c), init)


def chunk(xs: jnp.ndarray, p) -> jnp.ndarray:
    """Chunk p of xs (N / chunks, chunks, ...), as fold reads it."""
    return jax.lax.dynamic_index_in_dim(xs, p, 1, keepdims=False)


def put(out: jnp.ndarray, y: jnp.ndarray, p) -> jnp.ndarray:
    """out (N / chunks, chunks, ...) with chunk p set to y."""
    return jax.lax.dynamic_update_index_in_dim(out, y, p, 1)


def map_chunks(fn: Callable, x: jnp.ndarray, chunks: int) -> jnp.ndarray:
    """fn over the batch of x chunk by chunk, the results put back in order (fn maps a batch
    of images to a batch of outputs)."""
    if chunks == 1:
        return fn(x)
    n = x.shape[0] // chunks
    y = jax.eval_shape(fn, jax.ShapeDtypeStruct((n, *x.shape[1:]), x.dtype))
    out = jnp.zeros((n, chunks, *y.shape[1:]), y.dtype)
    out = fold(lambda xc, p, out: put(out, fn(xc), p), x, chunks, out)
    return out.reshape(x.shape[0], *out.shape[2:])
