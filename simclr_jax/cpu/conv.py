"""CPU-only convolutions, chosen at run time: oneDNN's (cpu/onednn.py, the CPU default),
and, where oneDNN cannot be built, im2col + one matmul and Winograd F(4x4, 3x3).

XLA:CPU's backward convolutions are its weak spot (measured: the plain step runs at ~30% of the
CPU's matmul peak, its forward alone at ~50%); written as shifted slices concatenated along
channels and one matmul, the same convolution runs through the CPU's GEMM instead. Winograd
(cpu/winograd.py) does the stride-1 3x3 convolutions (most of a ResNet's FLOPs) with 4x
fewer multiplications and a smaller transformed input than im2col's columns; the strided and
1x1 convolutions stay im2col. Both run the batch in cache-sized chunks (cpu/chunks.py).
Same parameter name and shape as nn.Conv ('kernel', (kh, kw, cin, cout)), so checkpoints move
freely between all four. TPU/GPU keep nn.Conv (core/backend.py).
"""

import functools
import math
from collections.abc import Sequence
from functools import partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from absl import logging

from simclr_jax.config import CONV_IMPLS
from simclr_jax.cpu import chunks, onednn
from simclr_jax.cpu.winograd import winograd_conv3x3, xla_winograd_conv3x3
from simclr_jax.errors import UserError

# 'SAME' or explicit ((top, bottom), (left, right)) zero padding, as nn.Conv takes it.
Padding = str | Sequence[tuple[int, int]]


def _pads(padding: Padding, size: int, kernel: int, stride: int, axis: int) -> tuple[int, int]:
    if padding == "SAME":  # TF/Flax 'SAME': the extra pixel goes at the end
        out = math.ceil(size / stride)
        total = max((out - 1) * stride + kernel - size, 0)
        return total // 2, total - total // 2
    if padding == "VALID":
        return 0, 0
    return tuple(padding[axis])


def im2col_conv(x: jnp.ndarray, kernel: jnp.ndarray, strides: tuple[int, int],
                padding: Padding = "SAME") -> jnp.ndarray:
    """Convolution of x (B, H, W, cin) with kernel (kh, kw, cin, cout), no bias, as the
    kh * kw shifted (strided) slices of x concatenated along channels and one matmul."""
    (kh, kw, cin, cout), (sh, sw) = kernel.shape, strides
    b, h, w, _ = x.shape
    (pt, pb), (pl, pr) = _pads(padding, h, kh, sh, 0), _pads(padding, w, kw, sw, 1)
    out_h, out_w = (h + pt + pb - kh) // sh + 1, (w + pl + pr - kw) // sw + 1
    if pt or pb or pl or pr:
        x = jnp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    # Column order (i, j, cin) matches kernel.reshape(kh * kw * cin, cout).
    cols = [jax.lax.slice(x, (0, i, j, 0), (b, i + (out_h - 1) * sh + 1,
                                            j + (out_w - 1) * sw + 1, cin), (1, sh, sw, 1))
            for i in range(kh) for j in range(kw)]
    cols = cols[0] if len(cols) == 1 else jnp.concatenate(cols, axis=-1)
    y = cols.reshape(-1, kh * kw * cin) @ kernel.reshape(-1, cout)
    return y.reshape(b, out_h, out_w, cout)


# Chunks of at least 512 KiB of input (a stride-2 3x3's columns are 2.25x that): measured
# best for the strided convs of ResNet-18 at widths 1/4 to 1 (bench/conv_layers.py).
_MIN_CHUNK_BYTES = 1 << 19


def _num_chunks(x_shape: tuple[int, ...], kernel: jnp.ndarray) -> int:
    return chunks.num_chunks(x_shape, kernel.size * kernel.dtype.itemsize,
                             kernel.dtype.itemsize, _MIN_CHUNK_BYTES)


@partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def chunked_im2col_conv(x: jnp.ndarray, kernel: jnp.ndarray, strides: tuple[int, int],
                        padding: Padding = "SAME") -> jnp.ndarray:
    """im2col_conv over the batch in cache-sized chunks (cpu/chunks.py), forward and
    backward (each chunk's columns rebuilt there rather than kept: they are 9x its input)."""
    return chunks.map_chunks(lambda xc: im2col_conv(xc, kernel, strides, padding), x,
                             _num_chunks(x.shape, kernel))


def _chunked_fwd(x, kernel, strides, padding):
    return chunked_im2col_conv(x, kernel, strides, padding), (x, kernel)


def _chunked_bwd(strides, padding, residuals, dy):
    x, kernel = residuals
    n = _num_chunks(x.shape, kernel)

    def grads(x, dy):
        return jax.vjp(lambda a, k: im2col_conv(a, k, strides, padding), x, kernel)[1](dy)

    if n == 1:  # small batches: no loop, no zeroed buffers
        return grads(x, dy)
    xs, dys = (a.reshape(-1, n, *a.shape[1:]) for a in (x, dy))

    def step(p, carry):
        dx, dk = carry
        gx, gk = grads(chunks.chunk(xs, p), chunks.chunk(dys, p))
        return chunks.put(dx, gx, p), dk + gk.astype(jnp.float32)

    init = (jnp.zeros_like(xs), jnp.zeros(kernel.shape, jnp.float32))
    dx, dk = jax.lax.fori_loop(0, n, step, init)
    return dx.reshape(x.shape), dk.astype(kernel.dtype)


chunked_im2col_conv.defvjp(_chunked_fwd, _chunked_bwd)


class Im2ColConv(nn.Module):
    """Drop-in for nn.Conv(features, kernel_size, strides, padding, use_bias=False)."""

    features: int
    kernel_size: tuple[int, int]
    strides: tuple[int, int] = (1, 1)
    padding: Padding = "SAME"
    use_bias: bool = False  # nn.Conv's signature; the ResNet's convs have no bias
    kernel_init: Any = nn.initializers.lecun_normal()
    dtype: Any = jnp.float32

    def conv(self, x: jnp.ndarray, kernel: jnp.ndarray) -> jnp.ndarray:
        return im2col_conv(x, kernel, tuple(self.strides), self.padding)

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        if self.use_bias:
            raise ValueError(f"{type(self).__name__} has no bias (the ResNet's convs have none)")
        kernel = self.param("kernel", self.kernel_init,
                            (*self.kernel_size, x.shape[-1], self.features), jnp.float32)
        return self.conv(x.astype(self.dtype), kernel.astype(self.dtype))


class WinogradConv(Im2ColConv):
    """Im2ColConv, with the stride-1 3x3 convolutions (zero padding 1 on every side, as 'SAME'
    gives them) done by Winograd F(4x4, 3x3); with <= 16 channels in and out, XLA's forward
    and input gradient with Winograd's kernel gradient (see xla_winograd_conv3x3). The other
    convolutions larger than 1x1 (the strided 3x3s, the 7x7 stem) run im2col in batch chunks."""

    def conv(self, x: jnp.ndarray, kernel: jnp.ndarray) -> jnp.ndarray:
        if (tuple(self.kernel_size) == (3, 3) and tuple(self.strides) == (1, 1)
                and [_pads(self.padding, x.shape[1 + a], 3, 1, a) for a in (0, 1)]
                == [(1, 1), (1, 1)]):
            if max(kernel.shape[2:]) <= 16:
                return xla_winograd_conv3x3(x, kernel)
            return winograd_conv3x3(x, kernel, 4)
        if kernel.shape[0] * kernel.shape[1] > 1:  # a 1x1's "columns" are x: nothing to gain
            return chunked_im2col_conv(x, kernel, tuple(self.strides), self.padding)
        return im2col_conv(x, kernel, tuple(self.strides), self.padding)


class OneDnnConv(WinogradConv):
    """Every f32 convolution through oneDNN (cpu/onednn.py): forward, input and kernel
    gradients, 2-4x faster than WinogradConv per layer on the dev machine. Other dtypes (bf16
    on CPU) take WinogradConv's path."""

    def conv(self, x: jnp.ndarray, kernel: jnp.ndarray) -> jnp.ndarray:
        if x.dtype != jnp.float32 or kernel.dtype != jnp.float32:
            return super().conv(x, kernel)
        pads = [_pads(self.padding, x.shape[1 + a], kernel.shape[a], self.strides[a], a)
                for a in (0, 1)]
        return onednn.conv(x, kernel, onednn.geometry_of(x.shape, kernel.shape, self.strides,
                                                         pads))


@functools.cache
def _log_fallback(reason: str) -> None:
    """Says once per process why conv_impl=auto runs Winograd instead of oneDNN."""
    logging.warning("conv_impl=auto: the oneDNN convolutions are unavailable, using winograd "
                    "(slower on CPU, same results): %s", reason)


def conv_class(impl: str) -> type[nn.Module]:
    """'xla' -> nn.Conv; 'im2col' -> Im2ColConv; 'winograd' -> WinogradConv; 'onednn' ->
    OneDnnConv; 'auto' -> OneDnnConv where oneDNN builds, else WinogradConv (logged once with
    the reason). 'onednn' where it cannot build raises UserError with the reason. For the CPU
    backend: core/backend.py sends only CPU runs here."""
    if impl not in CONV_IMPLS:  # jobs check config.conv_impl first; benches call this directly
        raise ValueError(f"conv_impl must be one of {CONV_IMPLS}, got {impl!r}")
    if impl == "auto":
        if (reason := onednn.unavailable_reason()) is None:
            impl = "onednn"
        else:
            _log_fallback(reason)
            impl = "winograd"
    elif impl == "onednn" and (reason := onednn.unavailable_reason()) is not None:
        raise UserError(f"config.conv_impl: 'onednn' is unavailable here: {reason}")
    return {"im2col": Im2ColConv, "winograd": WinogradConv, "onednn": OneDnnConv,
            "xla": nn.Conv}[impl]
