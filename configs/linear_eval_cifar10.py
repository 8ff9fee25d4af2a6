"""Linear evaluation on CIFAR-10 (the paper's protocol): frozen encoder, a linear classifier on h.

    python -m simclr_jax.linear_eval --config=configs/linear_eval_cifar10.py \\
        --config.pretrained=runs/cifar10 --workdir=runs/cifar10_linear
    # much faster: features computed once, classifier trained on them (no augmentation)
    ... --config.cache_features=True

Nesterov momentum, lr 0.1 x B/256, no weight decay, 100 epochs, random crop + flip for training,
evaluated on the test split. Dataset, data_dir and image size come from the pretraining run.
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
    c.learning_rate = 0.1
    c.weight_decay = 0.0
    return c
