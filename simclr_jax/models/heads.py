"""Projection head g(h) (SimCLR v1: 2 layers, v2: 3 layers)."""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from simclr_jax.models.resnet import BN_EPSILON, BN_MOMENTUM

HEAD_MODES = ("none", "linear", "nonlinear")
# The official head initialises its dense layers with N(0, 0.01).
dense_init = nn.initializers.normal(0.01)


class ProjectionHead(nn.Module):
    """Dense (no bias) + BN (+ReLU) per layer; the last BN has no centre (beta).

    Returns the list of layer outputs [h, g1(h), ..., z] so that fine-tuning can start from any
    layer (`ft_proj_selector`). Hidden width equals the input width, as in the paper.
    """

    mode: str = "nonlinear"
    num_layers: int = 2
    out_dim: int = 128
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, h: jnp.ndarray, train: bool = True) -> list[jnp.ndarray]:
        def layer(x, width, last, name):
            x = nn.Dense(width, use_bias=False, kernel_init=dense_init, dtype=self.dtype,
                         name=f"{name}_dense")(x)
            return nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM,
                                epsilon=BN_EPSILON, use_bias=not last, dtype=self.dtype,
                                name=f"{name}_bn")(x)

        outputs = [h]
        if self.mode == "none":
            return outputs
        if self.mode == "linear":
            outputs.append(layer(h, self.out_dim, True, "linear"))
            return outputs
        x = h
        for j in range(self.num_layers):
            last = j == self.num_layers - 1
            x = layer(x, self.out_dim if last else h.shape[-1], last, f"nl_{j}")
            if not last:
                x = nn.relu(x)
            outputs.append(x)
        return outputs
