"""Imports an official SimCLR TF checkpoint as one of ours (library: evals/import_tf_lib.py;
the TF variable names -> our tree: models/tf_checkpoint.py).

    python -m simclr_jax.import_tf \\
        --checkpoint=gs://simclr-checkpoints/simclrv2/pretrained/r50_1x_sk0 \\
        --workdir=runs/r50_1x_sk0
    python -m simclr_jax.linear_eval --config=configs/linear_eval_imagenet.py \\
        --config.pretrained=runs/r50_1x_sk0 --workdir=runs/r50_1x_sk0_linear

--checkpoint is a TF1 saver prefix (DIR/model.ckpt-N), a TF2 tf.train.Checkpoint prefix, or a
directory holding one; gs:// paths are read through tf.io.gfile. --ema imports the
exponential-moving-average copy (ema_model/) of the released SimCLRv2 checkpoints.
"""

from absl import flags

from simclr_jax import cli
from simclr_jax.evals import import_tf_lib

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Defined when the command runs, not at import (another command's module may be imported
    into the same process)."""
    flags.DEFINE_string("checkpoint", None, "Official TF checkpoint: prefix or directory (local "
                        "or gs://).", required=True)
    flags.DEFINE_string("workdir", None, "Where to write our checkpoint (empty or new).",
                        required=True)
    flags.DEFINE_bool("ema", False, "Import the ema_model/ copy instead of the trained weights.")


def _run() -> None:
    s = import_tf_lib.import_checkpoint(FLAGS.checkpoint, FLAGS.workdir, ema=FLAGS.ema)
    a = s["architecture"]
    print(f"import_tf: {s['checkpoint']} ({s['format']}{', ema' if s['ema'] else ''}, "
          f"{s['variables']} variables): ResNet-{a['depth']} x{a['width_multiplier']:g} "
          f"sk_ratio={a['sk_ratio']:g}, head {a['proj_head_mode']} {a['num_proj_layers']} "
          f"layer(s), {a['num_classes']} classes -> {s['step_dir']}", flush=True)


def main() -> None:
    """Console-script entry point."""
    define_flags()
    cli.run_command(_run)


if __name__ == "__main__":
    main()
