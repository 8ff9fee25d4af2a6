"""SimCLR on ImageNet, the paper's recipe: ResNet-50, B=4096, tau=0.1, LARS lr 0.3 x B/256.

    python -m simclr_jax.pretrain --config=configs/imagenet.py --workdir=gs://BUCKET/runs/r50 \\
        --config.data_dir=gs://BUCKET/tensorflow_datasets
    # SimCLRv2-style head and decay:
    ... --config.num_proj_layers=3 --config.weight_decay=1e-4
    # CPU-sized local run (tiny model, 128 px, a few steps) on a prepared imagenet2012:
    python -m simclr_jax.pretrain --config=configs/imagenet.py:local --workdir=runs/imagenet_local

On a pod, run it through launch/tpu.sh (see the README).
"""

import ml_collections

from simclr_jax.config import base_config


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    """variant '' = paper scale (100 epochs); 'local' = ResNet-18 at 1/4 width, 128 px."""
    c = base_config()  # base_config is the ImageNet recipe
    c.dataset = "imagenet2012"
    c.image_size = 224
    c.color_jitter_strength = 1.0
    c.blur_prob = 0.5
    c.resnet_depth = 50
    c.temperature = 0.1
    c.batch_size = 4096
    c.num_epochs = 100
    c.learning_rate = 0.3
    c.lr_scaling = "linear"
    c.weight_decay = 1e-6
    c.dtype = "bfloat16"  # TPU-native compute; params and the loss stay float32
    if variant == "local":
        c.image_size = 128
        c.resnet_depth = 18
        c.width_multiplier = 0.25
        c.batch_size = 64
        c.num_train_steps = 20
        c.log_every_steps = 5
        c.checkpoint_every_steps = 10
        c.dtype = "float32"
    elif variant:
        raise ValueError(f"unknown variant {variant!r} of configs/imagenet.py: use '' or 'local'")
    return c
