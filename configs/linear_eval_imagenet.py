"""Linear evaluation on ImageNet (the paper's protocol, Appendix B.6).

    python -m simclr_jax.linear_eval --config=configs/linear_eval_imagenet.py \\
        --config.pretrained=gs://BUCKET/runs/r50 --workdir=gs://BUCKET/runs/r50_linear \\
        --config.data_dir=gs://BUCKET/tensorflow_datasets

Frozen ResNet (BN in inference mode), Nesterov momentum, B=4096, lr 0.1 x B/256 = 1.6, no
weight decay, 90 epochs; random resized crop + flip for training, centre crop 0.875 for eval;
top-1 and top-5 on the validation split.
"""

import ml_collections

from simclr_jax.eval_config import base_config


def get_config() -> ml_collections.ConfigDict:
    c = base_config()
    c.dataset = "imagenet2012"
    c.train_split = "train"
    c.eval_split = "validation"
    c.batch_size = 4096
    c.eval_batch_size = 1024
    c.num_epochs = 90
    c.learning_rate = 0.1
    c.weight_decay = 0.0
    c.log_every_steps = 100
    return c
