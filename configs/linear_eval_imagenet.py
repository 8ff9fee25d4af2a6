"""Linear evaluation on ImageNet: the official README's ImageNet linear-eval command
(google-research/simclr README.md, "Finetuning the linear head (linear eval)"):
`--fine_tune_after_block=4 --zero_init_logits_layer=True --optimizer=momentum
--learning_rate=0.1 --weight_decay=1e-6 --train_epochs=90 --train_batch_size=4096
--warmup_epochs=0`: frozen ResNet (BN in inference mode), Nesterov momentum, lr 0.1 x B/256 =
1.6, weight decay 1e-6, 90 epochs; random resized crop + flip for training, centre crop 0.875
for eval; top-1 and top-5 on the validation split. The README: "around 64.5%" after its
100-epoch pretraining; the released SimCLRv2 models: see the README's checkpoint table.

    python -m simclr_jax.linear_eval --config=configs/linear_eval_imagenet.py \\
        --config.pretrained=gs://BUCKET/runs/r50 --workdir=gs://BUCKET/runs/r50_linear \\
        --config.data_dir=gs://BUCKET/tensorflow_datasets
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
    c.warmup_epochs = 0.0
    c.optimizer = "momentum"
    c.learning_rate = 0.1
    c.lr_scaling = "linear"
    c.weight_decay = 1e-6
    c.zero_init_classifier = True
    c.log_every_steps = 100
    return c
