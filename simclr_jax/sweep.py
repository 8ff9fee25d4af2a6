"""Ablation sweeps (library: research/sweep_lib.py): the paper's experiments run as lists of
config variants, then tabulated (the experiments are simclr_jax/research/experiments/<NAME>.py).

    python -m simclr_jax.sweep --experiment=losses --workdir=runs/sweeps/losses --scale=cpu \\
        --cifar10_folder=/data/cifar10/train
"""

from absl import flags

from simclr_jax import cli
from simclr_jax.research import sweep_lib


def define_flags() -> None:
    """The command's flags; defined only when it runs, so importing this module adds none."""
    flags.DEFINE_string("experiment", None, "Experiment name: "
                        + ", ".join(sweep_lib.list_experiments()) + ".", required=True)
    flags.DEFINE_string("workdir", None, "Where the variants, tables and plot go.",
                        required=True)
    flags.DEFINE_enum("scale", "cpu", ["cpu", "paper"], "cpu: a CIFAR-10 folder subset, tiny "
                      "models; paper: the paper's CIFAR-10 recipe (needs an accelerator).")
    flags.DEFINE_string("cifar10_folder", None, "cpu scale: CIFAR-10's training images as JPEGs, "
                        "root/<class>/*.jpg (default: $SIMCLR_CIFAR10_FOLDER).")


def _sweep() -> None:
    f = flags.FLAGS
    rows = sweep_lib.run_sweep(sweep_lib.load_experiment(f.experiment, f.scale), f.workdir,
                               cifar10_folder=f.cifar10_folder)
    failed = [r["variant"] for r in rows if r.get("status") != "ok"]
    print(f"[sweep] {len(rows) - len(failed)}/{len(rows)} variants ok; tables in {f.workdir}"
          + (f"; failed: {', '.join(failed)}" if failed else ""))
    if failed:
        raise SystemExit(1)


def main() -> None:
    """Console-script entry point."""
    define_flags()
    cli.run_command(_sweep)


if __name__ == "__main__":
    main()
