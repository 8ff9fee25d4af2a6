"""Fine-tuning job (library: evals/finetune_lib.py): a classifier on h or on a projection-head
layer, the encoder trainable after `fine_tune_after_block`, on all or a fraction of the labels.

    python -m simclr_jax.finetune --config.pretrained=runs/default --workdir=runs/ft
    python -m simclr_jax.finetune --config=configs/finetune_imagenet.py:1pct \\
        --config.pretrained=gs://B/runs/r50 --workdir=gs://B/runs/r50_ft1pct
"""

from simclr_jax import cli
from simclr_jax.evals import finetune_lib


def main() -> None:
    """Console-script entry point."""
    cli.run_eval_job("finetune", finetune_lib.run)


if __name__ == "__main__":
    main()
