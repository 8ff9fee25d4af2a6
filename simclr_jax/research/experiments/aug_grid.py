"""Augmentation pairs (paper Figure 5): transformation 1 then transformation 2 on one branch,
the other branch the identity; diagonal = a single transformation.

    python -m simclr_jax.sweep --experiment=aug_grid --workdir=runs/sweeps/aug_grid [--scale=paper]

As in the paper, the host never crops (it passes the whole image when view ops are set),
so 'crop' is just another op here. configs/experiments/aug_grid_split.py is the variant where
transformation 1 goes to view 1 and transformation 2 to view 2.
"""

import os

from simclr_jax.research.experiments import _common

# Reduced set at cpu scale (each cell is one pretraining run); SIMCLR_GRID_OPS overrides it.
CPU_OPS = ("crop", "cutout", "color", "sobel", "noise", "rotate")
PAPER_OPS = ("crop", "cutout", "color", "sobel", "noise", "blur", "rotate")


def ops(scale: str) -> list[str]:
    env = os.environ.get("SIMCLR_GRID_OPS")
    return env.split(",") if env else list(CPU_OPS if scale == "cpu" else PAPER_OPS)


def get_experiment(scale: str, split: bool = False) -> dict:
    names = ops(scale)
    variants = []
    for t1 in names:
        for t2 in names:
            if split:
                views = {"view1_ops": t1, "view2_ops": t2}
            else:
                views = {"view1_ops": t1 if t1 == t2 else f"{t1},{t2}", "view2_ops": ""}
            variants.append({"name": f"{t1}+{t2}", "overrides": views,
                             "labels": {"t1": t1, "t2": t2}})
    how = "t1 on view 1, t2 on view 2" if split else "t1 then t2 on one view, other identity"
    return {"title": f"augmentation pairs ({how}; {scale}): kNN top-1 on h",
            "base": _common.base(scale), "prepare": _common.prepare(scale),
            "variants": variants, "evaluation": "knn", "metric": "knn_h",
            "plot": {"kind": "heatmap", "row": "t1", "col": "t2",
                     "row_title": "1st transformation", "col_title": "2nd transformation"}}
