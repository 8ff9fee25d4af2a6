"""Semi-supervised fine-tuning on ImageNet with 1% or 10% of the labels (the official subsets,
TFDS imagenet2012_subset/1pct and /10pct; prepare them with `tfds build imagenet2012_subset`).

- '1pct', '10pct': the SimCLR (v1) paper's recipe (Appendix B.5): the whole network, Nesterov
  momentum, B=4096, lr 0.05 x B/256 = 0.8, no warmup, no weight decay; 60 epochs (1%) or 30
  (10%); crop + flip only; the classifier on h.
- 'v2_1pct', 'v2_10pct': the official README's SimCLRv2 fine-tuning command (google-research/
  simclr README.md, "Semi-supervised learning and fine-tuning the whole network"):
  `--fine_tune_after_block=-1 --zero_init_logits_layer=True --optimizer=lars
  --learning_rate=0.005 --learning_rate_scaling=sqrt --weight_decay=0 --train_epochs=60
  --train_batch_size=1024 --warmup_epochs=0 --num_proj_layers=3 --ft_proj_selector=1`:
  LARS lr 0.005 x sqrt(1024) = 0.16, from the projection head's first layer. The README gives
  the 1% command and says to swap the dataset for 10%; 10% runs 30 epochs, as the SimCLRv2
  paper's Appendix and the released finetuned_10pct checkpoints' step count (3754) say.

    python -m simclr_jax.finetune --config=configs/finetune_imagenet.py:v2_1pct \\
        --config.pretrained=gs://BUCKET/runs/r50 --workdir=gs://BUCKET/runs/r50_ft1 \\
        --config.data_dir=gs://BUCKET/tensorflow_datasets
    python -m simclr_jax.finetune --config=configs/finetune_imagenet.py:1pct ...
"""

import ml_collections

from simclr_jax.eval_config import base_config

EPOCHS = {"1pct": 60, "10pct": 30, "v2_1pct": 60, "v2_10pct": 30}


def get_config(variant: str = "10pct") -> ml_collections.ConfigDict:
    """variant: '1pct' / '10pct' (SimCLR paper) or 'v2_1pct' / 'v2_10pct' (official v2)."""
    if variant not in EPOCHS:
        raise ValueError(f"unknown variant {variant!r} of configs/finetune_imagenet.py: use "
                         f"one of {sorted(EPOCHS)}")
    c = base_config()
    c.dataset = "imagenet2012"
    c.train_split = "train"
    c.eval_split = "validation"
    c.label_fraction = 0.01 if variant.endswith("1pct") else 0.1
    c.num_epochs = EPOCHS[variant]
    c.fine_tune_after_block = -1
    c.zero_init_classifier = True
    c.warmup_epochs = 0.0
    c.weight_decay = 0.0
    c.eval_batch_size = 1024
    if variant.startswith("v2_"):
        c.batch_size = 1024
        c.optimizer = "lars"
        c.learning_rate = 0.005
        c.lr_scaling = "sqrt"
        c.ft_proj_selector = 1
    else:
        c.batch_size = 4096
        c.optimizer = "momentum"
        c.learning_rate = 0.05
        c.lr_scaling = "linear"
    return c
