"""Winograd F(m x m, 3 x 3) convolution for stride-1 3x3 'SAME' convolutions: a CPU speed-up.

A 3x3 convolution computed tile by tile in the Winograd domain (Lavin & Gray 2016): each
(m+2) x (m+2) input tile is transformed (B^T d B), multiplied channel-wise with the transformed
kernel (G g G^T) as (m+2)^2 independent matmuls over channels, and transformed back (A^T M A)
into an m x m output tile. F(2, 3) needs 16 multiplications per 2x2 outputs where the direct
convolution needs 36 (2.25x fewer FLOPs); F(4, 3) needs 36 per 4x4 (4x fewer). The transforms
are additions (memory-bound, fused by XLA), and the transformed input is (m+2)^2/m^2 times the
input (4x for F(2, 3), 2.25x for F(4, 3)) where im2col's columns are 9x. Rounding differs from
the direct convolution at the level of float32 epsilon times a small constant (F(4, 3):
about 1e-5 relative).

The backward pass is written out (custom VJP) rather than left to autodiff, whose transpose of
the tiling is a slow scatter-add: the input gradient of a stride-1 'SAME' 3x3 convolution is
the same convolution of the output gradient with the flipped, transposed kernel (so Winograd
again), and the kernel gradient is G^T (V^T dM) G, (m+2)^2 matmuls that contract over the
tiles, with V the transformed input (recomputed) and dM = A dY A^T.

No maintained JAX library offers this (XLA:CPU's own convolutions run far below its matmul
peak, see cpu/conv.py), hence written here. CPU only: TPU/GPU keep XLA's convolutions.
"""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from simclr_jax.cpu import chunks

# (B^T, G, A^T) of F(m, 3), m = 2 and 4 (Lavin & Gray 2016).
TRANSFORMS = {
    2: (np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]),
        np.array([[1, 0, 0], [1 / 2, 1 / 2, 1 / 2], [1 / 2, -1 / 2, 1 / 2], [0, 0, 1]]),
        np.array([[1, 1, 1, 0], [0, 1, -1, -1]])),
    4: (np.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
                  [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]]),
        np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                  [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]]),
        np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0],
                  [0, 1, -1, 8, -8, 1]])),
}


def _combine(matrix: np.ndarray, parts: list) -> list:
    """[sum_a matrix[r, a] * parts[a] for each row r], skipping zeros and unit multiplies."""
    out = []
    for row in matrix:
        acc = None
        for c, part in zip(row, parts, strict=True):
            if c == 0:
                continue
            term = part if c == 1 else -part if c == -1 else float(c) * part
            acc = term if acc is None else acc + term
        out.append(acc)
    return out


def _tiles(x: jnp.ndarray, m: int) -> tuple[int, int]:
    return -(-x.shape[1] // m), -(-x.shape[2] // m)


def input_transform(x: jnp.ndarray, m: int) -> jnp.ndarray:
    """x (N, H, W, C) -> V ((m+2)^2, N * tiles, C): B^T d B of every (m+2)^2 input tile (tiles
    at stride m over x zero-padded by 1, as 'SAME' pads a 3x3 convolution)."""
    bt = TRANSFORMS[m][0]
    a = m + 2
    n, h, w, c = x.shape
    th, tw = _tiles(x, m)
    xp = jnp.pad(x, ((0, 0), (1, th * m + 1 - h), (1, tw * m + 1 - w), (0, 0)))
    # Columns first, all (m+2) results stacked, then rows on the stack: 2 (m+2) strided slices
    # and 2 (m+2) sums instead of (m+2) (m+3) of each (the program, and so its compile time,
    # stays small; the arithmetic is the same).
    cols = jnp.stack(_combine(bt, [xp[:, :, q:q + m * tw:m] for q in range(a)]))
    v = jnp.stack(_combine(bt, [cols[:, :, r:r + m * th:m] for r in range(a)]))
    return v.reshape(a * a, -1, c)  # (r, q, n, th, tw, c) -> (r * a + q, tiles, c)


def output_transform(mm: jnp.ndarray, shape: tuple[int, ...], m: int) -> jnp.ndarray:
    """M ((m+2)^2, N * tiles, K) -> y (N, H, W, K): A^T M A per tile, tiles put in place."""
    at = TRANSFORMS[m][2]
    a = m + 2
    n, h, w = shape[:3]
    th, tw = -(-h // m), -(-w // m)
    k = mm.shape[-1]
    mm = mm.reshape(a, a, n, th, tw, k)
    rows = jnp.stack(_combine(at, [mm[r] for r in range(a)]))  # (i, q, n, th, tw, k)
    y = jnp.stack(_combine(at, [rows[:, q] for q in range(a)]))  # (j, i, n, th, tw, k)
    y = y.transpose(2, 3, 1, 4, 0, 5)  # (n, th, i, tw, j, k)
    return y.reshape(n, th * m, tw * m, k)[:, :h, :w]


def kernel_transform(kernel: jnp.ndarray, m: int) -> jnp.ndarray:
    """(3, 3, C, K) -> U ((m+2)^2, C, K) = G g G^T."""
    g = jnp.asarray(TRANSFORMS[m][1], kernel.dtype)
    u = jnp.einsum("ra,abio,qb->rqio", g, kernel, g, precision=jax.lax.Precision.HIGHEST)
    return u.reshape((m + 2) ** 2, *kernel.shape[2:])


# Chunks of at least 1 MiB of input (the transformed input is 2.25x that): measured best at
# 16-128 channels (bench/conv_layers.py).
_MIN_CHUNK_BYTES = 1 << 20


def num_chunks(x_shape: tuple[int, ...], channels_out: int, itemsize: int) -> int:
    """How many batch chunks a Winograd convolution of x (N, H, W, C) runs in (chunks.py)."""
    return chunks.num_chunks(x_shape, 36 * x_shape[-1] * channels_out * itemsize, itemsize,
                             _MIN_CHUNK_BYTES)


def _conv(x, u, m):
    return output_transform(jax.lax.dot_general(input_transform(x, m), u,
                                                (((2,), (1,)), ((0,), (0,)))), x.shape, m)


def _forward(x, kernel, m, n_chunks):
    u = kernel_transform(kernel, m)
    return chunks.map_chunks(lambda xc: _conv(xc, u, m), x, n_chunks)


def _conv3x3(x, kernel, m):
    return _forward(x, kernel, m, num_chunks(x.shape, kernel.shape[-1], x.dtype.itemsize))


@partial(jax.custom_vjp, nondiff_argnums=(2,))
def winograd_conv3x3(x: jnp.ndarray, kernel: jnp.ndarray, m: int = 4) -> jnp.ndarray:
    """3x3, stride 1, 'SAME' (zero padding 1), no bias: x (N, H, W, C), kernel (3, 3, C, K)."""
    return _conv3x3(x, kernel, m)


def _fwd(x, kernel, m):
    return _conv3x3(x, kernel, m), (x, kernel)


def _output_grad_transform(dy, m):
    """dy (N, H, W, K) -> dM ((m+2)^2, N * tiles, K) = A dY A^T per tile (the transpose of
    output_transform)."""
    at = TRANSFORMS[m][2]
    a = m + 2
    th, tw = _tiles(dy, m)
    dyp = jnp.pad(dy, ((0, 0), (0, th * m - dy.shape[1]), (0, tw * m - dy.shape[2]), (0, 0)))
    cols = jnp.stack(_combine(at.T, [dyp[:, :, j::m] for j in range(m)]))  # (q, n, th*m, tw, k)
    dmm = jnp.stack(_combine(at.T, [cols[:, :, i::m] for i in range(m)]))  # (r, q, n, th, tw, k)
    return dmm.reshape(a * a, -1, dy.shape[-1])


def _kernel_grad_transform(x, dy, m):
    """dU = V^T dM per Winograd point ((m+2)^2, C, K), contracting over the tiles."""
    return jax.lax.dot_general(input_transform(x, m), _output_grad_transform(dy, m),
                               (((1,), (1,)), ((0,), (0,))))


def _kernel_grad(x, dy, m):
    """dk (3, 3, C, K) of the 3x3 'SAME' convolution of x (N, H, W, C): dU = V^T dM per
    Winograd point, summed over the chunks, then dk = G^T dU G."""
    n_chunks = num_chunks(x.shape, dy.shape[-1], x.dtype.itemsize)
    a = m + 2
    if n_chunks == 1:
        du = _kernel_grad_transform(x, dy, m)
    else:
        dys = dy.reshape(-1, n_chunks, *dy.shape[1:])
        du = chunks.fold(lambda xc, p, du: du + _kernel_grad_transform(
            xc, chunks.chunk(dys, p), m), x, n_chunks,
            jnp.zeros((a * a, x.shape[-1], dy.shape[-1]), jnp.float32))
    g = jnp.asarray(TRANSFORMS[m][1], jnp.float32)
    return jnp.einsum("ra,rqio,qb->abio", g, du.astype(jnp.float32).reshape(a, a, *du.shape[1:]),
                      g, precision=jax.lax.Precision.HIGHEST)


def _flipped(kernel):
    """The kernel whose 'SAME' convolution of dy is the input gradient of a stride-1 3x3
    convolution (flipped in space, channels swapped: exact for symmetric padding)."""
    return jnp.flip(kernel, (0, 1)).transpose(0, 1, 3, 2)


def _bwd(m, residuals, dy):
    x, kernel = residuals
    dx = _forward(dy, _flipped(kernel), m, num_chunks(dy.shape, x.shape[-1], dy.dtype.itemsize))
    return dx, _kernel_grad(x, dy, m).astype(kernel.dtype)


winograd_conv3x3.defvjp(_fwd, _bwd)


def _xla_conv3x3(x, kernel):
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), ((1, 1), (1, 1)),
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))


# At <= 16 channels XLA:CPU's own forward convolution and input gradient beat Winograd (its
# transforms cost more than its 16-wide matmuls save), but its kernel gradient is 4-10x slower
# than Winograd's (bench/conv_layers.py): so the two are combined there.
@jax.custom_vjp
def xla_winograd_conv3x3(x: jnp.ndarray, kernel: jnp.ndarray) -> jnp.ndarray:
    """winograd_conv3x3 with XLA's forward and input gradient, Winograd F(4, 3)'s kernel
    gradient: the fastest on CPU when the channels are few."""
    return _xla_conv3x3(x, kernel)


def _hybrid_fwd(x, kernel):
    return _xla_conv3x3(x, kernel), (x, kernel)


def _hybrid_bwd(residuals, dy):
    x, kernel = residuals
    return _xla_conv3x3(dy, _flipped(kernel)), _kernel_grad(x, dy, 4).astype(kernel.dtype)


xla_winograd_conv3x3.defvjp(_hybrid_fwd, _hybrid_bwd)
