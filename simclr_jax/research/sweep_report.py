"""A sweep's tables and plot: results.csv, results.md and results.png from per-variant rows."""

import csv
from pathlib import Path

import numpy as np

FIRST = ("variant", "status")


def columns(rows: list[dict]) -> list[str]:
    """variant, status, then every other key in first-seen order (error last)."""
    cols = list(FIRST)
    for row in rows:
        cols += [k for k in row if k not in cols and k != "error"]
    if any("error" in r for r in rows):
        cols.append("error")
    return cols


def fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"
    return "" if value is None else str(value)


def write_csv(rows: list[dict], path: Path) -> None:
    cols = columns(rows)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=cols)
        writer.writeheader()
        for row in rows:
            writer.writerow({c: row.get(c, "") for c in cols})


def write_markdown(rows: list[dict], path: Path, title: str) -> None:
    cols = columns(rows)
    lines = [f"# {title}", "", "| " + " | ".join(cols) + " |",
             "|" + "---|" * len(cols)]
    for row in rows:
        cells = [fmt(row.get(c)) for c in cols]
        if row.get("status") != "ok":
            cells[1] = f"**{cells[1].upper()}**"
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    path.write_text("\n".join(lines) + "\n")


def heatmap_grid(rows: list[dict], row_key: str, col_key: str, metric: str
                 ) -> tuple[list[str], list[str], np.ndarray]:
    """(row labels, column labels, values) with NaN where a variant failed or is missing."""
    row_labels = list(dict.fromkeys(r[row_key] for r in rows))
    col_labels = list(dict.fromkeys(r[col_key] for r in rows))
    grid = np.full((len(row_labels), len(col_labels)), np.nan)
    for r in rows:
        if r.get("status") == "ok" and metric in r:
            grid[row_labels.index(r[row_key]), col_labels.index(r[col_key])] = r[metric]
    return row_labels, col_labels, grid


def write_plot(rows: list[dict], exp: dict, path: Path) -> None:
    """Heat-map (augmentation grid) or bars; failed variants are drawn as 'failed'/'x'."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plot = exp.get("plot", {"kind": "bars"})
    metric = exp.get("metric") or next(
        (k for r in rows for k in r if k.startswith(("knn_", "linear_"))), None)
    title = exp.get("title", "sweep")
    if plot["kind"] == "heatmap":
        ylab, xlab, grid = heatmap_grid(rows, plot["row"], plot["col"], metric)
        cells = {(ylab.index(r[plot["row"]]), xlab.index(r[plot["col"]])) for r in rows}
        fig, ax = plt.subplots(figsize=(1.1 * len(xlab) + 2.2, 0.9 * len(ylab) + 1.8))
        image = ax.imshow(np.ma.masked_invalid(grid), cmap="viridis")
        for i in range(len(ylab)):
            for j in range(len(xlab)):
                # NaN: 'failed' if the grid has that variant, blank if it has none (e.g. a
                # row with only one temperature). Masked cells are white, so black text.
                nan = np.isnan(grid[i, j])
                text = ("failed" if (i, j) in cells else "") if nan else f"{100 * grid[i, j]:.1f}"
                ax.text(j, i, text, ha="center", va="center", fontsize=8,
                        color="k" if nan or grid[i, j] >= np.nanmean(grid) else "w")
        ax.set_xticks(range(len(xlab)), xlab, rotation=30)
        ax.set_yticks(range(len(ylab)), ylab)
        ax.set_xlabel(plot.get("col_title", plot["col"]))
        ax.set_ylabel(plot.get("row_title", plot["row"]))
        fig.colorbar(image, ax=ax, label=metric)
    else:
        metrics = exp.get("bar_metrics") or [metric]
        names = [r["variant"] for r in rows]
        fig, ax = plt.subplots(figsize=(max(4.0, 0.6 * len(names) * len(metrics) + 2), 3.6))
        width = 0.8 / len(metrics)
        for m, name in enumerate(metrics):
            values = [r.get(name, np.nan) if r.get("status") == "ok" else np.nan for r in rows]
            xs = np.arange(len(names)) + (m - (len(metrics) - 1) / 2) * width
            ax.bar(xs, np.nan_to_num(np.array(values, float) * 100), width, label=name)
            for x, v, r in zip(xs, values, rows, strict=True):
                # 'failed' marks a failed variant; '-' a metric this variant does not have.
                text = ("failed" if r.get("status") != "ok" else "-" if np.isnan(v)
                        else f"{100 * v:.1f}")
                ax.text(x, 1 if np.isnan(v) else 100 * v + 0.5, text, ha="center", fontsize=7,
                        rotation=90 if text == "failed" else 0)
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
        ax.set_ylabel("top-1 accuracy (%)")
        if len(metrics) > 1:
            ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90, bbox_inches="tight")  # long row labels are not cut off
    plt.close(fig)


def write_all(rows: list[dict], exp: dict, root: Path) -> None:
    """results.csv, results.md and results.png in the sweep's workdir."""
    root.mkdir(parents=True, exist_ok=True)
    write_csv(rows, root / "results.csv")
    write_markdown(rows, root / "results.md", exp.get("title", "sweep"))
    write_plot(rows, exp, root / "results.png")
