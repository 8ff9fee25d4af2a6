"""Augmentation pairs with transformation 1 on view 1 and transformation 2 on view 2.

    python -m simclr_jax.sweep --experiment=aug_grid_split --workdir=runs/sweeps/aug_split
"""

from simclr_jax.research.experiments import aug_grid


def get_experiment(scale: str) -> dict:
    return aug_grid.get_experiment(scale, split=True)
