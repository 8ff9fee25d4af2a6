"""SimCLR pretraining job.

    python -m simclr_jax.pretrain --workdir=runs/default                    # embedded default
    python -m simclr_jax.pretrain --config=configs/cifar10.py --workdir=DIR --config.batch_size=256
"""

import os

from absl import app, flags

from simclr_jax import cli, default_config
from simclr_jax.errors import report_user_errors

cli.define_config_flag(os.path.abspath(default_config.__file__),
                       "Config file (configs/*.py); without it, the embedded default.")
flags.DEFINE_string("workdir", "runs/pretrain", "Checkpoints, metrics.jsonl and TensorBoard.")
cli.define_distributed_flags()
FLAGS = flags.FLAGS


@report_user_errors
def main(argv) -> None:
    """Parses flags only; the work is train.train_and_evaluate."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    cli.quiet_library_logs()
    cli.initialize_distributed_from_flags()
    # Only now: importing train builds jnp constants, which starts the XLA backend.
    from simclr_jax import train

    train.train_and_evaluate(FLAGS.config, FLAGS.workdir)


def run() -> None:
    """Console-script entry point."""
    app.run(main, flags_parser=cli.parse_flags)


if __name__ == "__main__":
    run()
