"""ResNet v1 encoder as in the official SimCLR code (Chen et al. 2020)."""

from collections.abc import Sequence
from functools import partial
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from simclr_jax.models.conv import conv_class

# Stage depths per ResNet depth; 18/34 use basic blocks, the others bottlenecks.
STAGE_SIZES = {
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
    200: (3, 24, 36, 3),
}

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


class BasicBlock(nn.Module):
    """Two 3x3 convolutions; the last BN's gamma starts at zero so the block starts as identity."""

    filters: int
    strides: int
    conv: Any
    norm: Any

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        residual = x
        y = self.conv(self.filters, (3, 3), (self.strides, self.strides), name="conv1")(x)
        y = nn.relu(self.norm(name="bn1")(y))
        y = self.conv(self.filters, (3, 3), name="conv2")(y)
        y = self.norm(scale_init=nn.initializers.zeros, name="bn2")(y)
        if residual.shape != y.shape:
            residual = self.conv(self.filters, (1, 1), (self.strides, self.strides),
                                 name="shortcut_conv")(residual)
            residual = self.norm(name="shortcut_bn")(residual)
        return nn.relu(residual + y)


class BottleneckBlock(nn.Module):
    """1x1 -> 3x3 (strided) -> 1x1 x4; zero-init gamma on the last BN."""

    filters: int
    strides: int
    conv: Any
    norm: Any

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        residual = x
        y = nn.relu(self.norm(name="bn1")(self.conv(self.filters, (1, 1), name="conv1")(x)))
        y = self.conv(self.filters, (3, 3), (self.strides, self.strides), name="conv2")(y)
        y = nn.relu(self.norm(name="bn2")(y))
        y = self.conv(self.filters * 4, (1, 1), name="conv3")(y)
        y = self.norm(scale_init=nn.initializers.zeros, name="bn3")(y)
        if residual.shape != y.shape:
            residual = self.conv(self.filters * 4, (1, 1), (self.strides, self.strides),
                                 name="shortcut_conv")(residual)
            residual = self.norm(name="shortcut_bn")(residual)
        return nn.relu(residual + y)


class ResNet(nn.Module):
    """ResNet v1 returning h, the globally average-pooled features.

    `cifar_stem` swaps the 7x7/2 conv + max-pool for one 3x3/1 conv (images of 32 px or less).
    `axis_name` is only needed under shard_map/pmap; under jit with a sharded batch XLA already
    computes BN statistics over the global batch.
    """

    depth: int = 50
    width_multiplier: float = 1.0
    cifar_stem: bool = False
    dtype: Any = jnp.float32
    axis_name: str | None = None
    conv_impl: str = "xla"  # see models/conv.py: 'im2col' is a CPU-only speed-up
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
        expansion = 1 if self.depth < 50 else 4
        return scaled_width(512, self.width_multiplier) * expansion

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = True) -> jnp.ndarray:
        cls = conv_class(self.conv_impl)
        if cls is nn.Conv:
            conv = partial(nn.Conv, use_bias=False, kernel_init=conv_init, dtype=self.dtype,
                           padding="SAME")
        else:
            conv = partial(cls, kernel_init=conv_init, dtype=self.dtype)
        norm = partial(nn.BatchNorm, use_running_average=not train, momentum=BN_MOMENTUM,
                       epsilon=BN_EPSILON, dtype=self.dtype, axis_name=self.axis_name)
        x = x.astype(self.dtype)
        stem_width = scaled_width(64, self.width_multiplier)
        if self.cifar_stem:
            x = conv(stem_width, (3, 3), name="stem_conv")(x)
            x = nn.relu(norm(name="stem_bn")(x))
        else:
            x = conv(stem_width, (7, 7), (2, 2), name="stem_conv")(x)
            x = nn.relu(norm(name="stem_bn")(x))
            x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")
        # nn.remat keeps the parameter names (checkpoints move freely between the two modes).
        block_cls = nn.remat(self.block_cls) if self.remat == "blocks" else self.block_cls
        for stage, num_blocks in enumerate(self.stage_sizes):
            filters = scaled_width(64 * 2**stage, self.width_multiplier)
            for block in range(num_blocks):
                strides = 2 if stage > 0 and block == 0 else 1
                x = block_cls(filters, strides, conv, norm, name=f"block{stage + 1}_{block}")(x)
        return jnp.mean(x, axis=(1, 2))
