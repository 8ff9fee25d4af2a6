"""The SimCLR model: encoder f, projection head g, and the online linear probe."""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from simclr_jax.models.heads import ProjectionHead, dense_init
from simclr_jax.models.resnet import ResNet


class SimCLRModel(nn.Module):
    """Returns (z, h, probe_logits) for a batch of augmented views.

    The probe sees stop_gradient(h), so its loss trains only the probe and never the encoder.
    It is the official TF2 code's `head_supervised` of `lineareval_while_pretraining`: a dense
    layer with bias, kernel ~ N(0, 0.01), bias 0 (weight decay: core/optim.py).
    """

    encoder: ResNet
    head: ProjectionHead
    num_classes: int = 0

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = True):
        h = self.encoder(x, train=train)
        z = self.head(h, train=train)[-1]
        logits = None
        if self.num_classes > 0:
            logits = nn.Dense(self.num_classes, dtype=jnp.float32, kernel_init=dense_init,
                              name="probe")(
                jax.lax.stop_gradient(h).astype(jnp.float32))
        return z.astype(jnp.float32), h, logits


DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def build_encoder(config: ml_collections.ConfigDict, conv: Any = nn.Conv) -> ResNet:
    """The ResNet described by `config` (resnet_depth, width_multiplier, image_size, dtype,
    conv_padding, shortcut, sk_ratio, se_ratio, remat) with `conv` as its convolution
    (core/backend.py resolves config.conv_impl to one)."""
    return ResNet(depth=config.resnet_depth, width_multiplier=config.width_multiplier,
                  cifar_stem=config.image_size <= 32, dtype=DTYPES[config.dtype], conv=conv,
                  padding=config.conv_padding, shortcut=config.shortcut,
                  sk_ratio=config.sk_ratio, se_ratio=config.se_ratio, remat=config.remat)


def build_model(config: ml_collections.ConfigDict, num_classes: int = 0,
                conv: Any = nn.Conv) -> SimCLRModel:
    """The full pretraining model for `config`; num_classes > 0 adds the online probe."""
    head = ProjectionHead(mode=config.proj_head_mode, num_layers=config.num_proj_layers,
                          out_dim=config.proj_out_dim, dtype=DTYPES[config.dtype])
    return SimCLRModel(build_encoder(config, conv), head, num_classes)


def param_count(params: Any) -> int:
    """Number of scalars in a parameter tree."""
    return sum(x.size for x in jax.tree_util.tree_leaves(params))
