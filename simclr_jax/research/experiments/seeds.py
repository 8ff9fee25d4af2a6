"""The base config with different seeds: the noise floor against which the other sweeps'
differences should be read (same data, same recipe; only the init, order and augmentations).

    python -m simclr_jax.sweep --experiment=seeds --workdir=runs/sweeps/seeds [--scale=paper]
"""

from simclr_jax.research.experiments import _common

SEEDS = (0, 1, 2)


def get_experiment(scale: str) -> dict:
    variants = [{"name": f"seed{s}", "overrides": {"seed": s}, "labels": {"seed": s}}
                for s in SEEDS]
    return {"title": f"seeds of the base config ({scale}): kNN top-1 on h",
            "base": _common.base(scale), "prepare": _common.prepare(scale),
            "variants": variants, "evaluation": "knn", "metric": "knn_h",
            "plot": {"kind": "bars"}}
