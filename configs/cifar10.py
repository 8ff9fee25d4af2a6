"""SimCLR on CIFAR-10: the official README's CIFAR-10 command (google-research/simclr README.md,
"Pretraining"; the same in tf2/README.md): ResNet-18 (CIFAR stem), B=512, 1000 epochs, LARS
lr 1.0 x B/256 = 2.0 with 10 warmup epochs, weight decay 1e-4, tau=0.5, colour strength 0.5, no
blur, 3-layer projection head (run.py's defaults). The README reports ~91% linear evaluation
(configs/linear_eval_cifar10.py).

    python -m simclr_jax.pretrain --config=configs/cifar10.py --workdir=runs/cifar10 \\
        --config.data_dir=~/tensorflow_datasets
    # CPU-sized smoke run (tiny model, a few steps):
    python -m simclr_jax.pretrain --config=configs/cifar10.py:smoke --workdir=runs/cifar10_smoke

The dataset must be prepared first: `tfds build cifar10 --data_dir=DIR` on a machine online.
"""

import ml_collections

from simclr_jax.config import cifar10_config


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    """variant '' = the official command (simclr_jax.config.cifar10_config); 'smoke' =
    ResNet-18 at 1/4 width for 50 steps."""
    c = cifar10_config()
    if variant == "smoke":
        c.width_multiplier = 0.25
        c.batch_size = 128
        c.num_train_steps = 50
        c.log_every_steps = 10
        c.checkpoint_every_steps = 25
    elif variant:
        raise ValueError(f"unknown variant {variant!r} of configs/cifar10.py: use '' or 'smoke'")
    return c
