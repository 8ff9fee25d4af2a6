"""The embedded default: SimCLR on scikit-learn's digits (real data, ships in a package).

    python -m simclr_jax.pretrain --workdir=runs/default

Runs on a laptop CPU in a few minutes and shows learning: the loss falls and the online
linear probe's accuracy rises well above chance (10%).
"""

import ml_collections

from simclr_jax.config import base_config


def get_config() -> ml_collections.ConfigDict:
    """Tiny ResNet-18 on 8x8 digits upsampled to 16 px."""
    c = base_config()
    c.dataset = "sklearn_digits"
    c.train_split = "train"
    c.eval_split = "test"
    c.image_size = 16
    c.crop_area_min = 0.3  # 8x8 digits: a 0.08 crop would keep a couple of pixels
    c.color_jitter_strength = 0.5
    c.blur_prob = 0.0
    c.resnet_depth = 18
    c.width_multiplier = 0.25
    c.proj_out_dim = 64
    c.temperature = 0.2
    c.batch_size = 128
    c.num_epochs = 20
    c.warmup_epochs = 2.0
    c.learning_rate = 1.0
    c.weight_decay = 1e-6
    c.log_every_steps = 10
    c.checkpoint_every_steps = 100
    return c
