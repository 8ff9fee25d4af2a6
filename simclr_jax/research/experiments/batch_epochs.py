"""Batch size x training length (paper Figure 9): bigger batches and longer training help more.

    python -m simclr_jax.sweep --experiment=batch_epochs --workdir=runs/sweeps/batch_epochs

cpu: B in {64, 128, 256} x {100, 200, 400} steps; paper: B in {256, ..., 4096} x {100, 300}
epochs (lr scaled linearly with B as in the recipe).
"""

from simclr_jax.research.experiments import _common


def get_experiment(scale: str) -> dict:
    if scale == "cpu":
        grid = [(b, {"num_train_steps": s}, f"{s} steps") for b in (64, 128, 256)
                for s in (100, 200, 400)]
    else:
        grid = [(b, {"num_epochs": e}, f"{e} epochs") for b in (256, 512, 1024, 2048, 4096)
                for e in (100, 300)]
    variants = [{"name": f"b{b}_{length.replace(' ', '')}",
                 "overrides": {"batch_size": b, **over},
                 "labels": {"batch_size": b, "length": length}} for b, over, length in grid]
    return {"title": f"batch size x training length ({scale}): kNN top-1 on h",
            "base": _common.base(scale), "prepare": _common.prepare(scale),
            "variants": variants, "evaluation": "knn", "metric": "knn_h",
            "plot": {"kind": "heatmap", "row": "batch_size", "col": "length"}}
