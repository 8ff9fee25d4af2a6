"""SimCLR on CIFAR-10, the paper's recipe (Appendix B.9): ResNet-18, B=512, tau=0.5, s=0.5.

    python -m simclr_jax.pretrain --config=configs/cifar10.py --workdir=runs/cifar10 \\
        --config.data_dir=~/tensorflow_datasets
    # CPU-sized smoke run (tiny model, a few steps):
    python -m simclr_jax.pretrain --config=configs/cifar10.py:smoke --workdir=runs/cifar10_smoke

The dataset must be prepared first: `tfds build cifar10 --data_dir=DIR` on a machine online.
"""

import ml_collections

from simclr_jax.config import base_config


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    """variant '' = paper scale; 'smoke' = ResNet-18 at 1/4 width for 50 steps."""
    c = base_config()
    c.dataset = "cifar10"
    c.train_split = "train"
    c.eval_split = "test"
    c.image_size = 32
    c.color_jitter_strength = 0.5
    c.blur_prob = 0.0  # no blur at 32 px
    c.resnet_depth = 18
    c.temperature = 0.5
    c.batch_size = 512
    c.num_epochs = 1000
    c.warmup_epochs = 10.0
    c.optimizer = "lars"
    c.learning_rate = 1.0
    c.lr_scaling = "linear"
    c.weight_decay = 1e-6
    c.log_every_steps = 50
    c.checkpoint_every_steps = 1000
    if variant == "smoke":
        c.width_multiplier = 0.25
        c.batch_size = 128
        c.num_train_steps = 50
        c.log_every_steps = 10
        c.checkpoint_every_steps = 25
    elif variant:
        raise ValueError(f"unknown variant {variant!r} of configs/cifar10.py: use '' or 'smoke'")
    return c
