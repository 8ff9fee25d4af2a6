"""SimCLRv2 on ImageNet: the official README's ImageNet command (google-research/simclr
README.md, "Pretraining"; the same in tf2/README.md): `--train_batch_size=4096
--train_epochs=100 --temperature=0.1 --learning_rate=0.075 --learning_rate_scaling=sqrt
--weight_decay=1e-4 --image_size=224`, the rest at run.py's defaults: ResNet-50, LARS
(lr 0.075 x sqrt(4096) = 4.8, momentum 0.9), 10 warmup epochs then cosine, a 3-layer projection
head to 128-d, colour strength 1.0 (multiplicative brightness), blur. The SimCLRv2 paper (Chen
et al. 2020, "Big Self-Supervised Models are Strong Semi-Supervised Learners") trains its
released models for 800 epochs (`--config.num_epochs=800`); `--config.sk_ratio=0.0625` gives
its selective-kernel networks (r50_1x_sk1, ...), `--config.width_multiplier=2` the 2x ones.

    python -m simclr_jax.pretrain --config=configs/imagenet_v2.py \\
        --workdir=gs://BUCKET/runs/r50_v2 --config.data_dir=gs://BUCKET/tensorflow_datasets
    python -m simclr_jax.pretrain --config=configs/imagenet_v2.py:local --workdir=runs/v2_local
"""

import ml_collections

from simclr_jax.config import base_config


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    """variant '' = the official command (100 epochs); 'local' = ResNet-18 at 1/4 width,
    128 px, a few steps."""
    c = base_config()
    c.dataset = "imagenet2012"
    c.image_size = 224
    c.color_jitter_strength = 1.0
    c.color_jitter_impl = "simclrv2"
    c.blur_prob = 0.5
    c.resnet_depth = 50
    c.sk_ratio = 0.0
    c.num_proj_layers = 3
    c.proj_out_dim = 128
    c.temperature = 0.1
    c.batch_size = 4096
    c.num_epochs = 100
    c.warmup_epochs = 10.0
    c.optimizer = "lars"
    c.learning_rate = 0.075
    c.lr_scaling = "sqrt"
    c.weight_decay = 1e-4
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
        raise ValueError(f"unknown variant {variant!r} of configs/imagenet_v2.py: use '' or "
                         f"'local'")
    return c
