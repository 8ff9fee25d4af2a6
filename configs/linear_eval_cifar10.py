"""Linear evaluation on CIFAR-10: the official README's CIFAR-10 linear-eval command
(google-research/simclr README.md, "Finetuning the linear head (linear eval)"):
`--train_mode=finetune --fine_tune_after_block=4 --zero_init_logits_layer=True
--optimizer=momentum --learning_rate=0.1 --weight_decay=0.0 --train_epochs=100
--train_batch_size=512 --warmup_epochs=0 --eval_split=test`: frozen encoder (BN in inference
mode), a zero-initialised linear classifier on h, Nesterov momentum 0.9, lr 0.1 x B/256 = 0.2
with cosine decay, random crop + flip for training. "Around 91%" after configs/cifar10.py.

    python -m simclr_jax.linear_eval --config=configs/linear_eval_cifar10.py \\
        --config.pretrained=runs/cifar10 --workdir=runs/cifar10_linear
    # much faster: features computed once, classifier trained on them (no augmentation)
    ... --config.cache_features=True

Dataset, data_dir and image size come from the pretraining run.
"""

import ml_collections

from simclr_jax.eval_config import base_config


def get_config() -> ml_collections.ConfigDict:
    c = base_config()
    c.dataset = "cifar10"
    c.train_split = "train"
    c.eval_split = "test"
    c.batch_size = 512
    c.num_epochs = 100
    c.warmup_epochs = 0.0
    c.optimizer = "momentum"
    c.learning_rate = 0.1
    c.lr_scaling = "linear"
    c.weight_decay = 0.0
    c.zero_init_classifier = True
    return c
