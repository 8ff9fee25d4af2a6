"""Curves of one or several runs' metrics.jsonl in one PNG (library: research/plot_lib.py;
transfer workdirs' bars: evals/transfer_lib/report.py).

    python -m simclr_jax.plot --workdir=runs/default              # -> runs/default/metrics.png
    python -m simclr_jax.plot --workdir=runs/a --workdir=runs/b --out=ab.png   # overlaid
    python -m simclr_jax.plot --workdir=runs/transfer --workdir=runs/transfer_random
        # transfer workdirs: bars of each dataset's headline metric -> transfer.png
"""

import os

from absl import flags

from simclr_jax import cli
from simclr_jax.evals.transfer_lib import report
from simclr_jax.research import plot_lib


def define_flags() -> None:
    """The command's flags; defined only when it runs, so importing this module adds none."""
    flags.DEFINE_multi_string("workdir", None, "A pretraining or evaluation workdir; repeat "
                              "the flag to overlay several runs.", required=True)
    flags.DEFINE_string("out", None, "PNG file to write (default: metrics.png in the first "
                        "workdir).")
    flags.DEFINE_string("title", "", "Figure title (default: the workdir's name).")


def _plot() -> None:
    f = flags.FLAGS
    if all(report.is_transfer_workdir(w) for w in f.workdir):
        out = f.out or os.path.join(f.workdir[0], "transfer.png")
        print(f"wrote {report.write_bar_chart(f.workdir, out, f.title)}")
        return
    out = f.out or os.path.join(f.workdir[0], "metrics.png")
    print(f"wrote {plot_lib.write_plot(f.workdir, out, f.title)}")


def main() -> None:
    """Console-script entry point."""
    define_flags()
    cli.run_command(_plot)


if __name__ == "__main__":
    main()
