"""Projection head none / linear / nonlinear, evaluated on h and on g(h) (paper Fig. 8, Tab. B.4).

    python -m simclr_jax.sweep --experiment=heads --workdir=runs/sweeps/heads [--scale=paper]
"""

from simclr_jax.research.experiments import _common


def get_experiment(scale: str) -> dict:
    variants = [
        {"name": "none", "overrides": {"proj_head_mode": "none"}, "layers": ("h",)},
        {"name": "linear", "overrides": {"proj_head_mode": "linear"}, "layers": ("h", "z")},
        {"name": "nonlinear", "overrides": {"proj_head_mode": "nonlinear"},
         "layers": ("h", "z")},
        # Reference: the same model untrained (nonlinear head), evaluated the same way.
        {"name": "random_init", "job": "random_init",
         "overrides": {"proj_head_mode": "nonlinear"}, "layers": ("h", "z")},
    ]
    return {"title": f"projection head: h vs g(h) ({scale})", "base": _common.base(scale),
            "prepare": _common.prepare(scale), "variants": variants,
            "evaluation": "knn,linear", "plot": {"kind": "bars"},
            "bar_metrics": ["knn_h", "knn_z", "linear_h", "linear_z"]}
