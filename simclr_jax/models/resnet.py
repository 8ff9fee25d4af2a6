"""ResNet v1 encoder as in the official SimCLR code (Chen et al. 2020; SimCLRv2 for SK / SE).

Post-activation ResNet v1 with the stride on the 3x3 conv, no conv biases, BN (decay 0.9,
eps 1e-5) with zero-initialised gamma on the last BN of every residual branch. As the official
`resnet.py` builds it: strided convs pad symmetrically and convolve 'VALID' (`padding='fixed'`),
the first block of *every* block group has a projection shortcut (`shortcut='every_group'`, so
ResNet-18/34 too), and `sk_ratio > 0` gives selective-kernel bottlenecks with the ResNet-D stem
(three 3x3 convs) and the avg-pool shortcut; `se_ratio > 0` adds squeeze-excitation. The legacy
values (`padding='same'`, `shortcut='when_needed'`) rebuild the network of checkpoints written
before these options existed.
"""

import dataclasses
from collections.abc import Sequence
from functools import partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


def fixed_padding(kernel_size: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """The official SimCLR `fixed_padding`: (k-1)//2 before, the rest after, on H and W.

    With padding='VALID' after it, a strided 3x3 conv and the strided 1x1 shortcut sample the
    same grid (pixels 0, s, 2s, ...), unlike 'SAME', which puts the extra pixel at the end.
    """
    total = kernel_size - 1
    return ((total // 2, total - total // 2),) * 2


# Stage depths per ResNet depth; 18/34 use basic blocks, the others bottlenecks.
STAGE_SIZES = {
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
    200: (3, 24, 36, 3),
}
PADDINGS = ("fixed", "same")  # official | legacy
SHORTCUTS = ("every_group", "when_needed")  # official | legacy (identity when shapes match)
SK_MIN_DIM = 32  # the official sk_conv2d's min_dim

# The official code uses TF's variance_scaling_initializer() (fan_in, truncated normal).
conv_init = nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal")
# Official BN: decay 0.9, epsilon 1e-5.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5
# Rematerialisation: 'blocks' recomputes each residual block's activations in the backward pass
# instead of keeping them (memory for large models/batches at the price of ~one more forward).
REMAT_MODES = ("none", "blocks")


def scaled_width(width: int, multiplier: float) -> int:
    """Channel count for a width multiplier (fractional multipliers for CPU-sized models)."""
    return max(1, int(round(width * multiplier)))


@dataclasses.dataclass(frozen=True)
class ConvMaker:
    """Makes the encoder's bias-free convs with the configured padding rule."""

    cls: Any  # nn.Conv or a CPU conv (simclr_jax/cpu), use_bias, kernel_init and dtype bound
    padding: str = "fixed"

    def __call__(self, features: int, kernel: int, strides: int = 1, *, name: str):
        pad = fixed_padding(kernel) if self.padding == "fixed" and strides > 1 else "SAME"
        return self.cls(features, (kernel, kernel), (strides, strides), padding=pad, name=name)


def projection(x: jnp.ndarray, features: int, strides: int, conv: ConvMaker, norm,
               resnet_d: bool) -> jnp.ndarray:
    """Projection shortcut: 1x1 conv (+ the ResNet-D 2x2 average pool first) and BN."""
    if resnet_d:
        if strides > 1:  # official fixed_padding(x, 2): one zero row/column at the end
            x = jnp.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)))
            x = nn.avg_pool(x, (2, 2), (strides, strides), padding="VALID")
        else:  # TF 'SAME' average pooling leaves the padded cells out of the divisor
            x = nn.avg_pool(x, (2, 2), (1, 1), padding="SAME", count_include_pad=False)
        x = conv(features, 1, 1, name="shortcut_conv")(x)
    else:
        x = conv(features, 1, strides, name="shortcut_conv")(x)
    return norm(name="shortcut_bn")(x)


class SqueezeExcite(nn.Module):
    """Official se_layer: mean over H, W -> 1x1 conv (bias) -> ReLU -> 1x1 conv -> sigmoid gate."""

    filters: int
    se_ratio: float
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        conv = partial(nn.Conv, kernel_size=(1, 1), kernel_init=conv_init, dtype=self.dtype)
        s = jnp.mean(x, axis=(1, 2), keepdims=True)
        s = conv(max(1, int(self.filters * self.se_ratio)), name="reduce")(s)
        s = conv(x.shape[-1], name="expand")(nn.relu(s))
        return nn.sigmoid(s) * x


class SelectiveKernel(nn.Module):
    """Official sk_conv2d: one 3x3 conv to 2 x filters (+BN, ReLU) split into two branches,
    mixed per channel by a softmax over the branches computed from their pooled sum."""

    filters: int
    strides: int
    sk_ratio: float
    conv: ConvMaker
    norm: Any
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        x = self.conv(2 * self.filters, 3, self.strides, name="conv")(x)
        x = nn.relu(self.norm(name="bn")(x))
        branches = jnp.stack(jnp.split(x, 2, axis=-1))  # (2, B, H, W, filters)
        g = jnp.mean(branches.sum(axis=0), axis=(1, 2), keepdims=True)
        conv1x1 = partial(nn.Conv, kernel_size=(1, 1), use_bias=False, kernel_init=conv_init,
                          dtype=self.dtype)
        mid = max(int(self.filters * self.sk_ratio), SK_MIN_DIM)
        g = nn.relu(self.norm(name="fuse_bn")(conv1x1(mid, name="fuse_conv")(g)))
        mixing = conv1x1(2 * self.filters, name="mix_conv")(g)
        mixing = jax.nn.softmax(jnp.stack(jnp.split(mixing, 2, axis=-1)), axis=0)
        return jnp.sum(branches * mixing, axis=0)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions; the last BN's gamma starts at zero so the block starts as identity."""

    filters: int
    strides: int
    conv: ConvMaker
    norm: Any
    use_projection: bool
    sk_ratio: float = 0.0
    se_ratio: float = 0.0
    dtype: Any = jnp.float32
    expansion = 1

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        residual = x
        if self.use_projection:
            # As the TF2 code: only the shortcut is pooled (TF1 pools the main path too and
            # fails on a shape mismatch for basic blocks with SK).
            residual = projection(x, self.filters, self.strides, self.conv, self.norm,
                                  resnet_d=self.sk_ratio > 0)
        y = self.conv(self.filters, 3, self.strides, name="conv1")(x)
        y = nn.relu(self.norm(name="bn1")(y))
        y = self.conv(self.filters, 3, name="conv2")(y)
        y = self.norm(scale_init=nn.initializers.zeros, name="bn2")(y)
        if self.se_ratio > 0:
            y = SqueezeExcite(self.filters, self.se_ratio, self.dtype, name="se")(y)
        return nn.relu(residual + y)


class BottleneckBlock(nn.Module):
    """1x1 -> 3x3 (strided; selective kernel with sk_ratio > 0) -> 1x1 x4; zero-init last BN."""

    filters: int
    strides: int
    conv: ConvMaker
    norm: Any
    use_projection: bool
    sk_ratio: float = 0.0
    se_ratio: float = 0.0
    dtype: Any = jnp.float32
    expansion = 4

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        residual = x
        if self.use_projection:
            residual = projection(x, 4 * self.filters, self.strides, self.conv, self.norm,
                                  resnet_d=self.sk_ratio > 0)
        y = nn.relu(self.norm(name="bn1")(self.conv(self.filters, 1, name="conv1")(x)))
        if self.sk_ratio > 0:
            y = SelectiveKernel(self.filters, self.strides, self.sk_ratio, self.conv, self.norm,
                                self.dtype, name="sk")(y)
        else:
            y = self.conv(self.filters, 3, self.strides, name="conv2")(y)
            y = nn.relu(self.norm(name="bn2")(y))
        y = self.conv(self.filters * 4, 1, name="conv3")(y)
        y = self.norm(scale_init=nn.initializers.zeros, name="bn3")(y)
        if self.se_ratio > 0:
            y = SqueezeExcite(self.filters, self.se_ratio, self.dtype, name="se")(y)
        return nn.relu(residual + y)


class ResNet(nn.Module):
    """ResNet v1 returning h, the globally average-pooled features.

    `cifar_stem` swaps the 7x7/2 conv + max-pool for one 3x3/1 conv (images of 32 px or less).
    `conv` makes every convolution (nn.Conv's signature): XLA's by default, a CPU one from
    simclr_jax/cpu where core/backend.py picks it; the parameters are the same either way.
    BN statistics are per call: under jit with the batch sharded over devices, XLA computes
    them over the global batch (cross-replica BN needs no axis name here).
    """

    depth: int = 50
    width_multiplier: float = 1.0
    cifar_stem: bool = False
    dtype: Any = jnp.float32
    conv: Any = nn.Conv
    padding: str = "fixed"  # PADDINGS
    shortcut: str = "every_group"  # SHORTCUTS
    sk_ratio: float = 0.0
    se_ratio: float = 0.0
    remat: str = "none"  # REMAT_MODES

    @property
    def stage_sizes(self) -> Sequence[int]:
        return STAGE_SIZES[self.depth]

    @property
    def block_cls(self):
        return BasicBlock if self.depth < 50 else BottleneckBlock

    @property
    def out_width(self) -> int:
        """Width of h."""
        return scaled_width(512, self.width_multiplier) * self.block_cls.expansion

    def _stem(self, x, conv: ConvMaker, norm) -> jnp.ndarray:
        width = scaled_width(64, self.width_multiplier)
        if self.cifar_stem:
            return nn.relu(norm(name="stem_bn")(conv(width, 3, name="stem_conv")(x)))
        if self.sk_ratio > 0:  # ResNet-D stem: three 3x3 convs
            x = nn.relu(norm(name="stem_bn1")(conv(max(1, width // 2), 3, 2, name="stem_conv1")(x)))
            x = nn.relu(norm(name="stem_bn2")(conv(max(1, width // 2), 3, name="stem_conv2")(x)))
            x = nn.relu(norm(name="stem_bn")(conv(width, 3, name="stem_conv")(x)))
        else:
            x = nn.relu(norm(name="stem_bn")(conv(width, 7, 2, name="stem_conv")(x)))
        return nn.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = True, *, stop_gradient_after: int = -1,
                 inference_bn_through: int = -1) -> jnp.ndarray:
        """h for images x in [0, 1]. Stages are 0 (stem) and 1..4 (block groups), as the
        official `fine_tune_after_block`: `stop_gradient_after=k` stops gradients after stage k;
        `inference_bn_through=k` runs the BNs of stages 0..k on their moving statistics (and
        leaves those untouched) even when `train`."""
        conv = ConvMaker(partial(self.conv, use_bias=False, kernel_init=conv_init,
                                 dtype=self.dtype), self.padding)

        def norm(stage: int):
            return partial(nn.BatchNorm, use_running_average=not train or
                           stage <= inference_bn_through, momentum=BN_MOMENTUM,
                           epsilon=BN_EPSILON, dtype=self.dtype)

        x = self._stem(x.astype(self.dtype), conv, norm(0))
        if stop_gradient_after == 0:
            x = jax.lax.stop_gradient(x)
        # nn.remat keeps the parameter names (checkpoints move freely between the two modes).
        block_cls = nn.remat(self.block_cls) if self.remat == "blocks" else self.block_cls
        for stage, num_blocks in enumerate(self.stage_sizes):
            filters = scaled_width(64 * 2**stage, self.width_multiplier)
            for block in range(num_blocks):
                strides = 2 if stage > 0 and block == 0 else 1
                if self.shortcut == "every_group":
                    use_projection = block == 0
                else:  # legacy: a projection only where the shapes change
                    use_projection = (strides != 1 or
                                      x.shape[-1] != filters * self.block_cls.expansion)
                x = block_cls(filters, strides, conv, norm(stage + 1), use_projection,
                                   self.sk_ratio, self.se_ratio, self.dtype,
                                   name=f"block{stage + 1}_{block}")(x)
            if stop_gradient_after == stage + 1:
                x = jax.lax.stop_gradient(x)
        return jnp.mean(x, axis=(1, 2))
