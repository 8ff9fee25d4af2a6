"""SimCLR pretraining job (library: core/train.py, train_and_evaluate; the name flax's imagenet
example gives it, kept rather than core/pretrain_lib.py; the kNN monitor: evals/monitor.py).

    python -m simclr_jax.pretrain --workdir=runs/default                    # embedded default
    python -m simclr_jax.pretrain --config=configs/cifar10.py --workdir=DIR --config.batch_size=256
"""

import os

from absl import flags

from simclr_jax import cli, config
from simclr_jax.core import train
from simclr_jax.evals import monitor

cli.define_config_flag(os.path.abspath(config.__file__),
                       "Config file (configs/*.py); without it, the embedded default.")
flags.DEFINE_string("workdir", "runs/pretrain", "Checkpoints, metrics.jsonl and TensorBoard.")
cli.define_distributed_flags()
cli.define_compilation_cache_flag()
FLAGS = flags.FLAGS


def pretrain(run_config, workdir: str) -> None:
    """Validates the config once, then trains (the kNN monitor is an evaluation: passed in)."""
    config.validate(run_config)
    train.train_and_evaluate(run_config, workdir, monitor=monitor.Monitor)


def main() -> None:
    """Console-script entry point."""
    cli.run_command(lambda: pretrain(FLAGS.config, FLAGS.workdir), distributed=True)


if __name__ == "__main__":
    main()
