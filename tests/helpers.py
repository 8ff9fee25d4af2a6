"""Tiny configs shared by the tests."""

import ml_collections

from simclr_jax.default_config import get_config


def tiny_config(tfds_dir: str, **overrides) -> ml_collections.ConfigDict:
    """The embedded default shrunk to a ResNet-18 at 1/8 width on 8 px views."""
    c = get_config()
    c.data_dir = tfds_dir
    c.image_size = 8
    c.width_multiplier = 0.125
    c.proj_out_dim = 16
    c.batch_size = 16
    c.num_train_steps = 4
    c.log_every_steps = 1
    c.checkpoint_every_steps = 2
    c.update(overrides)
    return c
