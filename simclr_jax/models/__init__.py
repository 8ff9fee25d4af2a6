"""Encoders, projection heads and the SimCLR model that combines them."""

from simclr_jax.models.heads import ProjectionHead
from simclr_jax.models.resnet import ResNet
from simclr_jax.models.simclr import SimCLRModel, build_model

__all__ = ["ProjectionHead", "ResNet", "SimCLRModel", "build_model"]
