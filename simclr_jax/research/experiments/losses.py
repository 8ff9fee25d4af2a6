"""NT-Xent vs NT-Logistic vs margin triplet at two temperatures (paper Table 4), plus NT-Xent
without L2 normalisation of z (Table 5).

    python -m simclr_jax.sweep --experiment=losses --workdir=runs/sweeps/losses [--scale=paper]
"""

from simclr_jax.research.experiments import _common

TEMPERATURES = (0.2, 0.5)
LOSSES = ("nt_xent", "nt_logistic", "margin_triplet")


def get_experiment(scale: str) -> dict:
    variants = [{"name": f"{loss}_t{t}", "overrides": {"loss": loss, "temperature": t},
                 "labels": {"loss": loss, "temperature": t}}
                for loss in LOSSES for t in TEMPERATURES]
    variants.append({"name": "nt_xent_t0.5_no_l2", "labels": {"loss": "nt_xent (no l2)",
                                                                "temperature": 0.5},
                     "overrides": {"temperature": 0.5, "normalize_embeddings": False}})
    return {"title": f"loss functions ({scale}): kNN top-1 on h", "base": _common.base(scale),
            "prepare": _common.prepare(scale), "variants": variants, "evaluation": "knn",
            "plot": {"kind": "heatmap", "row": "loss", "col": "temperature"},
            "metric": "knn_h"}
