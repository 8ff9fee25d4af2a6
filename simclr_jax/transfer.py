"""Transfer job (library: the package evals/transfer_lib/, its job.py): linear and fine-tuned
evaluation of a pretrained encoder on other datasets, the SimCLR paper's third comparison
(appendix B.8).

    python -m simclr_jax.transfer --config.pretrained=runs/default --workdir=runs/transfer
    python -m simclr_jax.transfer --config=configs/transfer.py --config.pretrained=RUN \\
        --config.datasets=paper --config.protocol=both --workdir=runs/transfer_paper
    python -m simclr_jax.transfer --config.pretrained=random --workdir=runs/transfer_random
"""

import os

from absl import flags

from simclr_jax import cli, transfer_config
from simclr_jax.evals.transfer_lib import job

FLAGS = flags.FLAGS


def main() -> None:
    """Console-script entry point."""
    cli.define_config_flag(f"{os.path.abspath(transfer_config.__file__)}",
                           "Config file (configs/transfer.py); without it, the embedded "
                           "default (linear protocol on the digits).")
    flags.DEFINE_string("workdir", "runs/transfer", "results.json, transfer.md, caches.")
    cli.define_distributed_flags()
    cli.run_command(lambda: job.run(FLAGS.config, FLAGS.workdir), distributed=True)


if __name__ == "__main__":
    main()
