"""Convolution as im2col + one matmul: a CPU-only speed-up, chosen at run time.

XLA:CPU's backward convolutions are its weak spot (measured: the plain step runs at ~30% of the
CPU's matmul peak, its forward alone at ~50%); written as shifted slices concatenated along
channels and one matmul, the same convolution runs through the CPU's GEMM instead. Same
parameter name and shape as nn.Conv ('kernel', (kh, kw, cin, cout)), so checkpoints move freely
between the two. TPU/GPU keep nn.Conv (see conv_class).
"""

import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

# 'SAME' or explicit ((top, bottom), (left, right)) zero padding, as nn.Conv takes it.
Padding = str | Sequence[tuple[int, int]]


def fixed_padding(kernel_size: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """The official SimCLR `fixed_padding`: (k-1)//2 before, the rest after, on H and W.

    With padding='VALID' after it, a strided 3x3 conv and the strided 1x1 shortcut sample the
    same grid (pixels 0, s, 2s, ...), unlike 'SAME', which puts the extra pixel at the end.
    """
    total = kernel_size - 1
    return ((total // 2, total - total // 2),) * 2


def _pads(padding: Padding, size: int, kernel: int, stride: int, axis: int) -> tuple[int, int]:
    if padding == "SAME":  # TF/Flax 'SAME': the extra pixel goes at the end
        out = math.ceil(size / stride)
        total = max((out - 1) * stride + kernel - size, 0)
        return total // 2, total - total // 2
    if padding == "VALID":
        return 0, 0
    return tuple(padding[axis])


class Im2ColConv(nn.Module):
    """Drop-in for nn.Conv(features, kernel_size, strides, padding, use_bias=False)."""

    features: int
    kernel_size: tuple[int, int]
    strides: tuple[int, int] = (1, 1)
    padding: Padding = "SAME"
    kernel_init: Any = nn.initializers.lecun_normal()
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        (kh, kw), (sh, sw) = self.kernel_size, self.strides
        b, h, w, cin = x.shape
        kernel = self.param("kernel", self.kernel_init, (kh, kw, cin, self.features),
                            jnp.float32)
        (pt, pb), (pl, pr) = (_pads(self.padding, h, kh, sh, 0),
                              _pads(self.padding, w, kw, sw, 1))
        out_h, out_w = (h + pt + pb - kh) // sh + 1, (w + pl + pr - kw) // sw + 1
        x = x.astype(self.dtype)
        if pt or pb or pl or pr:
            x = jnp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
        # Column order (i, j, cin) matches kernel.reshape(kh * kw * cin, cout).
        cols = [jax.lax.slice(x, (0, i, j, 0), (b, i + (out_h - 1) * sh + 1,
                                                j + (out_w - 1) * sw + 1, cin), (1, sh, sw, 1))
                for i in range(kh) for j in range(kw)]
        cols = cols[0] if len(cols) == 1 else jnp.concatenate(cols, axis=-1)
        y = cols.reshape(-1, kh * kw * cin) @ kernel.reshape(-1, self.features).astype(self.dtype)
        return y.reshape(b, out_h, out_w, self.features)


CONV_IMPLS = ("auto", "xla", "im2col")


def conv_class(impl: str) -> type[nn.Module]:
    """'xla' -> nn.Conv; 'im2col' -> Im2ColConv; 'auto' -> im2col on CPU only."""
    if impl == "auto":
        impl = "im2col" if jax.default_backend() == "cpu" else "xla"
    return Im2ColConv if impl == "im2col" else nn.Conv
