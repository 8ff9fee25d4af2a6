"""Encoder depth x width (paper Figure 7): bigger models gain more from unsupervised learning.

    python -m simclr_jax.sweep --experiment=depth_width --workdir=runs/sweeps/depth_width

Each width has a supervised baseline on the same encoder (job 'supervised').
"""

from simclr_jax.research.experiments import _common


def get_experiment(scale: str) -> dict:
    depths = (18, 34) if scale == "cpu" else (18, 50, 101, 152)
    widths = (0.0625, 0.125, 0.25) if scale == "cpu" else (1.0, 2.0, 4.0)
    variants = []
    for depth in depths:
        for width in widths:
            over = {"resnet_depth": depth, "width_multiplier": width}
            variants.append({"name": f"r{depth}_w{width}", "overrides": over,
                             "labels": {"depth": f"R{depth}", "width": f"{width}x"}})
    return {"title": f"depth x width ({scale}): kNN top-1 on h", "base": _common.base(scale),
            "prepare": _common.prepare(scale), "variants": variants, "evaluation": "knn",
            "metric": "knn_h", "plot": {"kind": "heatmap", "row": "depth", "col": "width"}}
