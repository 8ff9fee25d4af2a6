"""kNN evaluation job (library: evals/knn_lib.py; the maths: evals/weighted_knn.py): weighted
kNN (k=200, T=0.1) of h, no training.

    python -m simclr_jax.knn --config.pretrained=runs/default --workdir=runs/knn
"""

from simclr_jax import cli
from simclr_jax.evals import knn_lib


def main() -> None:
    """Console-script entry point."""
    cli.run_eval_job("knn", knn_lib.run)


if __name__ == "__main__":
    main()
