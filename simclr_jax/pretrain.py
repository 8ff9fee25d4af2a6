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
flags.DEFINE_string("coordinator_address", None, "Multi-process: host:port of process 0.")
flags.DEFINE_integer("num_processes", None, "Multi-process: number of processes.")
flags.DEFINE_integer("process_id", None, "Multi-process: this process's id.")
flags.DEFINE_integer("distributed_timeout", 300,
                     "Multi-process: seconds to wait for all processes to reach the "
                     "coordinator before failing with an error.", lower_bound=1)
FLAGS = flags.FLAGS


@report_user_errors
def main(argv) -> None:
    """Parses flags only; the work is train.train_and_evaluate."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from simclr_jax import parallel  # after flags: keep --help fast

    cli.quiet_library_logs()

    parallel.initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes,
                                    FLAGS.process_id, FLAGS.distributed_timeout)
    # Only now: importing train builds jnp constants, which starts the XLA backend, and
    # jax.distributed.initialize must come before that.
    from simclr_jax import train

    train.train_and_evaluate(FLAGS.config, FLAGS.workdir)


def run() -> None:
    """Console-script entry point."""
    app.run(main, flags_parser=cli.parse_flags)


if __name__ == "__main__":
    run()
