"""Linear evaluation job (library: evals/linear_eval_lib.py): a linear classifier on the frozen
encoder's h.

    python -m simclr_jax.linear_eval --config.pretrained=runs/default --workdir=runs/linear
    python -m simclr_jax.linear_eval --config=configs/linear_eval_cifar10.py \\
        --config.pretrained=runs/cifar10 --workdir=runs/cifar10_linear
    # every new checkpoint of a running pretraining job, until its last:
    python -m simclr_jax.linear_eval --config.pretrained=runs/default --workdir=runs/lin --wait
"""

from simclr_jax import cli
from simclr_jax.evals import linear_eval_lib


def main() -> None:
    """Console-script entry point."""
    cli.run_eval_job("linear_eval", linear_eval_lib.run)


if __name__ == "__main__":
    main()
