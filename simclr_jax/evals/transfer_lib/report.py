"""The transfer job's reports: the paper-style table (transfer.md), the one-line summary and
the bar chart `python -m simclr_jax.plot --workdir=W` draws for a transfer workdir."""

import json
import os
from collections.abc import Sequence

from etils import epath

from simclr_jax.errors import UserError
from simclr_jax.evals import figures

PROTOCOL_NAMES = {"linear": "Linear evaluation", "finetune": "Fine-tuned"}
METRIC_NAMES = {"top1": "top-1", "mean_per_class": "mean per-class", "map11": "11-pt mAP"}


def headline(result: dict) -> float:
    """The value of a result's headline metric on test."""
    key = {"top1": "test_top1", "mean_per_class": "test_mean_per_class",
           "map11": "test_map11"}[result["metric"]]
    return result[key]


def markdown(doc: dict) -> str:
    """transfer.md: one row per protocol, one column per dataset (headline metric, %), then
    the details of each (dataset, protocol)."""
    results = doc["results"]
    names = list(results)
    enc = doc["encoder"]
    lines = [f"# Transfer: {enc['pretrained']} (checkpoint step {enc['checkpoint_step']})", "",
             "| Protocol | " + " | ".join(names) + " |",
             "|---|" + "---:|" * len(names)]
    for protocol, title in PROTOCOL_NAMES.items():
        cells = [f"{100 * headline(results[n][protocol]):.1f}" if protocol in results[n]
                 else "" for n in names]
        if any(cells):
            lines.append(f"| {title} | " + " | ".join(cells) + " |")
    lines += ["", "Headline metric (test, %): "
              + ", ".join(f"{n} {METRIC_NAMES[next(iter(results[n].values()))['metric']]}"
                          for n in names), "",
              "| Dataset | Protocol | test top-1 | test mean per-class | test mAP (11-pt) | "
              "val score | chosen | validation |", "|---|---|---:|---:|---:|---:|---|---|"]
    for n in names:
        for protocol, r in results[n].items():
            cell = [f"{100 * r[k]:.2f}" if k in r else "" for k in
                    ("test_top1", "test_mean_per_class", "test_map11")]
            chosen = ", ".join(f"{k}={v:.3g}" for k, v in r["chosen"].items())
            lines.append(f"| {n} | {protocol} | {' | '.join(cell)} | "
                         f"{100 * r['val_score']:.2f} | {chosen} | {r['validation']} |")
    return "\n".join(lines) + "\n"


def summary(results: dict) -> str:
    """One line: each dataset's headline test metric per protocol."""
    parts = [f"{n} {p}={headline(r):.4f}" for n, by in results.items() for p, r in by.items()]
    return " ".join(parts) or "nothing evaluated"


def short_name(name: str) -> str:
    """A dataset's name on a chart: a folder's last path component."""
    if name.startswith("folder:"):
        return "folder:" + os.path.basename(os.path.normpath(name[len("folder:"):]))
    return name


def is_transfer_workdir(workdir: str) -> bool:
    """True for a workdir the transfer job wrote."""
    path = epath.Path(workdir) / "results.json"
    if not path.exists():
        return False
    try:
        return json.loads(path.read_text()).get("job") == "transfer"
    except json.JSONDecodeError:
        return False


def write_bar_chart(workdirs: Sequence[str], out: str, title: str = "") -> str:
    """Grouped bars: each dataset's headline test metric, one bar per workdir and protocol
    (e.g. a pretrained run next to its random-init baseline); returns the PNG's path."""
    import matplotlib  # only here: importing the package must stay light

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bars: dict[str, dict[str, float]] = {}
    for w in workdirs:
        doc = json.loads((epath.Path(w) / "results.json").read_text())
        label = os.path.basename(os.path.normpath(w)) if len(workdirs) > 1 else ""
        for name, by in doc["results"].items():
            for protocol, r in by.items():
                series = f"{label} {protocol}".strip()
                bars.setdefault(series, {})[name] = 100 * headline(r)
    if not bars:
        raise UserError(f"{workdirs[0]}/results.json holds no finished dataset yet: nothing "
                        f"to plot")
    names = list(dict.fromkeys(n for s in bars.values() for n in s))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * len(names) * len(bars) + 2), 3.8))
    width = 0.8 / len(bars)
    for k, (series, values) in enumerate(bars.items()):
        xs = [i + (k - (len(bars) - 1) / 2) * width for i in range(len(names))]
        ax.bar(xs, [values.get(n, 0.0) for n in names], width, label=series)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels([short_name(n) for n in names], rotation=20, fontsize=8)
    ax.set_ylabel("test headline metric (%)")
    ax.set_ylim(0, 100)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title or "transfer", fontsize=10)
    fig.tight_layout()
    return figures.save_png(fig, out)
