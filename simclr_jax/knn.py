"""kNN evaluation job: weighted kNN (k=200, T=0.1) of h, no training (evals/knn.py).

    python -m simclr_jax.knn --config.pretrained=runs/default --workdir=runs/knn
"""

from simclr_jax import cli
from simclr_jax.evals import knn


def main() -> None:
    """Console-script entry point."""
    cli.run_eval_job("knn", knn.run)


if __name__ == "__main__":
    main()
