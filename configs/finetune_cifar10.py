"""Fine-tuning on CIFAR-10 with a stratified, seeded fraction of the labels (default 10%).

    python -m simclr_jax.finetune --config=configs/finetune_cifar10.py \\
        --config.pretrained=runs/cifar10 --workdir=runs/cifar10_ft10
    ... --config.label_fraction=0.01 --config.num_epochs=60  # 1% of the labels
    ... --config.label_fraction=1.0 --config.num_epochs=100  # all labels (transfer protocol)

The paper's fine-tuning recipe scaled to CIFAR: Nesterov momentum, B=512, lr 0.05 x B/256, no
weight decay, crop + flip; the whole encoder trains (fine_tune_after_block=-1).
"""

import ml_collections

from simclr_jax.eval_config import base_config


def get_config() -> ml_collections.ConfigDict:
    c = base_config()
    c.dataset = "cifar10"
    c.train_split = "train"
    c.eval_split = "test"
    c.label_fraction = 0.1
    c.batch_size = 512
    c.num_epochs = 30
    c.learning_rate = 0.05
    c.weight_decay = 0.0
    return c
