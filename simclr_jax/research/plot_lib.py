"""Curves of runs' metrics.jsonl in one PNG (the command is `python -m simclr_jax.plot`).

A pretraining workdir gives one panel per quantity it logged: NT-Xent loss, contrastive
accuracy, the online probe's and the kNN monitor's accuracy, learning rate, images/s. An
evaluation workdir (linear eval, fine-tune, kNN: it has a results.json) gives its classifier's
training curves and, from results.json's history, the accuracy of each evaluated pretraining
checkpoint. Several workdirs are drawn over each other, one colour each.
"""

import json
import os
from collections.abc import Sequence

from etils import epath

from simclr_jax.core import metric_io
from simclr_jax.errors import UserError
from simclr_jax.evals import figures

# (panel title, y label, metric keys drawn in it): the panels a run has data for are drawn.
PANELS = (
    ("NT-Xent loss", "loss", ("loss",)),
    ("contrastive accuracy", "accuracy", ("contrast_acc",)),
    ("probe / kNN accuracy", "top-1", ("probe_acc", "knn_top1")),
    ("classifier training", "loss / top-1", ("train_loss", "train_top1")),
    ("learning rate", "lr", ("learning_rate",)),
    ("throughput", "images/s", ("images_per_sec",)),
)
EVAL_KEYS = ("top1", "top5", "knn_top1", "knn_top5")


def curves(workdir: str) -> dict[str, tuple[list[int], list[float]]]:
    """metric -> (steps, values) of a workdir's metrics.jsonl (the last row of a step wins:
    a resumed run logs again the steps after its checkpoint). An eval workdir that evaluated
    several checkpoints (--wait) restarts its steps for each: only the newest one's rows."""
    rows = metric_io.read_rows(workdir)
    evaluated = [r["checkpoint_step"] for r in rows if "checkpoint_step" in r]
    if evaluated:
        rows = [r for r in rows if r.get("checkpoint_step") == evaluated[-1]]
    by_step: dict[int, dict] = {}
    for row in rows:
        by_step.setdefault(int(row["step"]), {}).update(row)
    out: dict[str, tuple[list[int], list[float]]] = {}
    for step in sorted(by_step):
        for key, value in by_step[step].items():
            if key != "step" and isinstance(value, (int, float)):
                steps, values = out.setdefault(key, ([], []))
                steps.append(step)
                values.append(float(value))
    return out


def eval_history(workdir: str) -> dict[str, tuple[list[int], list[float]]]:
    """metric -> (pretraining checkpoint steps, values) from an eval workdir's results.json."""
    path = epath.Path(workdir) / "results.json"
    if not path.exists():
        return {}
    try:
        doc = json.loads(path.read_text())
    except ValueError as e:
        raise UserError(f"{path} is not valid JSON ({e}): is it a results.json of "
                        f"simclr_jax's eval jobs?") from None
    out: dict[str, tuple[list[int], list[float]]] = {}
    for entry in doc.get("history", [doc]):
        for key in EVAL_KEYS:
            if key in entry and "checkpoint_step" in entry:
                steps, values = out.setdefault(key, ([], []))
                steps.append(int(entry["checkpoint_step"]))
                values.append(float(entry[key]))
    return out


def write_plot(workdirs: Sequence[str], out: str, title: str = "") -> str:
    """Draws the workdirs' curves into the PNG `out`; returns its path."""
    import matplotlib  # only here: importing the package must stay light

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    if not workdirs:
        raise UserError("no workdir to plot: pass --workdir=DIR (repeat it to overlay runs)")
    if os.path.splitext(out)[1].lower() != ".png":
        raise UserError(f"--out={out}: expected a .png file name")
    runs = []
    for workdir in workdirs:
        if not epath.Path(workdir).is_dir():
            raise UserError(f"workdir {workdir} does not exist (--workdir): pass a "
                            f"pretraining or evaluation workdir")
        data, history = curves(workdir), eval_history(workdir)
        if not data and not history:
            raise UserError(f"{workdir} has no metrics.jsonl rows and no results.json "
                            f"(--workdir): nothing to plot yet")
        runs.append((_label(workdir, workdirs), data, history))
    panels = [(t, y, [k for k in keys if any(k in d for _, d, _ in runs)])
              for t, y, keys in PANELS]
    panels = [p for p in panels if p[2]]
    if any(h for _, _, h in runs):
        panels.append(("evaluation of each checkpoint", "accuracy", list(EVAL_KEYS)))
    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    styles = ("-", "--", ":", "-.")
    for ax, (panel_title, ylabel, keys) in zip(axes.flat, panels, strict=False):
        history_panel = panel_title.startswith("evaluation")
        for r, (label, data, history) in enumerate(runs):
            source = history if history_panel else data
            for k, key in enumerate(k for k in keys if k in source):
                steps, values = source[key]
                name = f"{label}: {key}" if len(runs) > 1 else key
                ax.plot(steps, values, styles[k % len(styles)], color=colours[r % len(colours)],
                        marker="o" if len(steps) < 12 else None, markersize=3, label=name)
        ax.set_title(panel_title, fontsize=10)
        ax.set_xlabel("pretraining step" if history_panel else "step", fontsize=9)
        ax.set_ylabel(ylabel, fontsize=9)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    if title or len(runs) == 1:
        fig.suptitle(title or runs[0][0], fontsize=11)
    fig.tight_layout()
    return figures.save_png(fig, out)


def _label(workdir: str, workdirs: Sequence[str]) -> str:
    """A workdir's name in legends: its last path component, or the full path when two
    workdirs share one."""
    name = os.path.basename(os.path.normpath(workdir))
    names = [os.path.basename(os.path.normpath(w)) for w in workdirs]
    return workdir if names.count(name) > 1 else name
