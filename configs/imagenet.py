"""SimCLR (v1) on ImageNet, the SimCLR paper's recipe (Chen et al. 2020, "A Simple Framework for
Contrastive Learning of Visual Representations", Sec. 4 "Default setting" and Appendix B.1):
ResNet-50, B=4096, 100 epochs, LARS lr 0.3 x B/256 = 4.8, weight decay 1e-6, 10 warmup epochs
then cosine, tau=0.1, a 2-layer projection head to 128-d; colour strength 1.0 with the paper's
(and the SimCLRv1 code's, first commit be133b3) additive brightness, blur. For the SimCLRv2
recipe that the official code's README runs, see configs/imagenet_v2.py.

    python -m simclr_jax.pretrain --config=configs/imagenet.py --workdir=gs://BUCKET/runs/r50 \\
        --config.data_dir=gs://BUCKET/tensorflow_datasets
    # CPU-sized local run (tiny model, 128 px, a few steps) on a prepared imagenet2012:
    python -m simclr_jax.pretrain --config=configs/imagenet.py:local --workdir=runs/imagenet_local

On a pod, run it through launch/tpu.sh (see the README).
"""

import ml_collections

from simclr_jax.config import base_config


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    """variant '' = paper scale (100 epochs); 'local' = ResNet-18 at 1/4 width, 128 px."""
    c = base_config()  # base_config is the paper's ImageNet recipe
    c.dataset = "imagenet2012"
    c.image_size = 224
    c.color_jitter_strength = 1.0
    c.color_jitter_impl = "simclrv1"
    c.blur_prob = 0.5
    c.resnet_depth = 50
    c.num_proj_layers = 2
    c.proj_out_dim = 128
    c.temperature = 0.1
    c.batch_size = 4096
    c.num_epochs = 100
    c.warmup_epochs = 10.0
    c.optimizer = "lars"
    c.learning_rate = 0.3
    c.lr_scaling = "linear"
    c.weight_decay = 1e-6
    c.dtype = "bfloat16"  # TPU-native compute; params and the loss stay float32
    if variant == "local":
        _local(c)
    elif variant:
        raise ValueError(f"unknown variant {variant!r} of configs/imagenet.py: use '' or 'local'")
    return c


def _local(c: ml_collections.ConfigDict) -> None:
    c.image_size = 128
    c.resnet_depth = 18
    c.width_multiplier = 0.25
    c.batch_size = 64
    c.num_train_steps = 20
    c.log_every_steps = 5
    c.checkpoint_every_steps = 10
    c.dtype = "float32"
