"""Semi-supervised fine-tuning on ImageNet with 1% or 10% of the labels (paper Appendix B.5).

    python -m simclr_jax.finetune --config=configs/finetune_imagenet.py:1pct \\
        --config.pretrained=gs://BUCKET/runs/r50 --workdir=gs://BUCKET/runs/r50_ft1 \\
        --config.data_dir=gs://BUCKET/tensorflow_datasets
    python -m simclr_jax.finetune --config=configs/finetune_imagenet.py:10pct ...
    # SimCLRv2: fine-tune from the first projection-head layer of a 3-layer head
    ... --config.ft_proj_selector=1

The label subsets are the official ones (TFDS imagenet2012_subset/1pct and /10pct; prepare
them with `tfds build imagenet2012_subset`). Nesterov momentum, B=4096, lr 0.05 x B/256, no
warmup, no weight decay; 60 epochs (1%) or 30 epochs (10%); crop + flip only.
"""

import ml_collections

from simclr_jax.eval_config import base_config

EPOCHS = {"1pct": 60, "10pct": 30}


def get_config(variant: str = "10pct") -> ml_collections.ConfigDict:
    """variant: '1pct' or '10pct' of the labels."""
    if variant not in EPOCHS:
        raise ValueError(f"unknown variant {variant!r} of configs/finetune_imagenet.py: use "
                         f"one of {sorted(EPOCHS)}")
    c = base_config()
    c.dataset = "imagenet2012"
    c.train_split = "train"
    c.eval_split = "validation"
    c.label_fraction = {"1pct": 0.01, "10pct": 0.1}[variant]
    c.batch_size = 4096
    c.eval_batch_size = 1024
    c.num_epochs = EPOCHS[variant]
    c.learning_rate = 0.05
    c.weight_decay = 0.0
    return c
