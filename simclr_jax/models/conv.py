"""CPU-only convolutions, chosen at run time: im2col + one matmul, and Winograd F(4x4, 3x3).

XLA:CPU's backward convolutions are its weak spot (measured: the plain step runs at ~30% of the
CPU's matmul peak, its forward alone at ~50%); written as shifted slices concatenated along
channels and one matmul, the same convolution runs through the CPU's GEMM instead. Winograd
(models/winograd.py) does the stride-1 3x3 convolutions (most of a ResNet's FLOPs) with 4x
fewer multiplications and a smaller transformed input than im2col's columns; the strided and
1x1 convolutions stay im2col. Same parameter name and shape as nn.Conv ('kernel',
(kh, kw, cin, cout)), so checkpoints move freely between all three. TPU/GPU keep nn.Conv (see
conv_class).
"""

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from simclr_jax.models.winograd import winograd_conv3x3


def im2col_conv(x: jnp.ndarray, kernel: jnp.ndarray, strides: tuple[int, int]) -> jnp.ndarray:
    """'SAME' convolution of x (B, H, W, cin) with kernel (kh, kw, cin, cout), no bias, as the
    kh * kw shifted (strided) slices of x concatenated along channels and one matmul."""
    (kh, kw, cin, cout), (sh, sw) = kernel.shape, strides
    b, h, w, _ = x.shape
    out_h, out_w = math.ceil(h / sh), math.ceil(w / sw)
    pad_h = max((out_h - 1) * sh + kh - h, 0)
    pad_w = max((out_w - 1) * sw + kw - w, 0)
    if pad_h or pad_w:  # TF/Flax 'SAME': the extra pixel goes at the end
        x = jnp.pad(x, ((0, 0), (pad_h // 2, pad_h - pad_h // 2),
                        (pad_w // 2, pad_w - pad_w // 2), (0, 0)))
    # Column order (i, j, cin) matches kernel.reshape(kh * kw * cin, cout).
    cols = [jax.lax.slice(x, (0, i, j, 0), (b, i + (out_h - 1) * sh + 1,
                                            j + (out_w - 1) * sw + 1, cin), (1, sh, sw, 1))
            for i in range(kh) for j in range(kw)]
    cols = cols[0] if len(cols) == 1 else jnp.concatenate(cols, axis=-1)
    y = cols.reshape(-1, kh * kw * cin) @ kernel.reshape(-1, cout)
    return y.reshape(b, out_h, out_w, cout)


class Im2ColConv(nn.Module):
    """Drop-in for nn.Conv(features, kernel_size, strides, padding='SAME', use_bias=False)."""

    features: int
    kernel_size: tuple[int, int]
    strides: tuple[int, int] = (1, 1)
    kernel_init: Any = nn.initializers.lecun_normal()
    dtype: Any = jnp.float32

    def conv(self, x: jnp.ndarray, kernel: jnp.ndarray) -> jnp.ndarray:
        return im2col_conv(x, kernel, tuple(self.strides))

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        kernel = self.param("kernel", self.kernel_init,
                            (*self.kernel_size, x.shape[-1], self.features), jnp.float32)
        return self.conv(x.astype(self.dtype), kernel.astype(self.dtype))


class WinogradConv(Im2ColConv):
    """Im2ColConv, with the stride-1 3x3 convolutions done by Winograd F(4x4, 3x3)."""

    def conv(self, x: jnp.ndarray, kernel: jnp.ndarray) -> jnp.ndarray:
        if tuple(self.kernel_size) == (3, 3) and tuple(self.strides) == (1, 1):
            return winograd_conv3x3(x, kernel, 4)
        return im2col_conv(x, kernel, tuple(self.strides))


CONV_IMPLS = ("auto", "xla", "im2col", "winograd")


def conv_class(impl: str) -> type[nn.Module]:
    """'xla' -> nn.Conv; 'im2col' -> Im2ColConv; 'winograd' -> WinogradConv; 'auto' ->
    WinogradConv on CPU, nn.Conv on TPU/GPU."""
    if impl == "auto":
        impl = "winograd" if jax.default_backend() == "cpu" else "xla"
    return {"im2col": Im2ColConv, "winograd": WinogradConv}.get(impl, nn.Conv)
