"""Colour distortion strength s for SimCLR and for a supervised baseline (paper Table 1):
contrastive learning gains from stronger colour augmentation, supervised learning does not.

    python -m simclr_jax.sweep --experiment=color_strength --workdir=runs/sweeps/color

Both jobs use the same encoder and the same augmentation (crop + flip + colour at strength s);
the supervised column reports its own classifier's top-1 and the kNN of its h.
"""

from simclr_jax.research.experiments import _common

STRENGTHS = (0.125, 0.25, 0.5, 1.0)


def get_experiment(scale: str) -> dict:
    variants = []
    for job in ("simclr", "supervised"):
        for s in STRENGTHS:
            variants.append({"name": f"{job}_s{s}", "job": job,
                             "overrides": {"color_jitter_strength": s},
                             "labels": {"job": job, "strength": s}})
    return {"title": f"colour strength ({scale}): kNN top-1 on h", "base": _common.base(scale),
            "prepare": _common.prepare(scale), "variants": variants, "evaluation": "knn",
            "metric": "knn_h", "plot": {"kind": "heatmap", "row": "job", "col": "strength"}}
