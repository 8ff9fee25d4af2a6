"""Label-fraction subsets for semi-supervised fine-tuning (1% / 10% of the labels).

ImageNet uses the paper's fixed subsets (TFDS `imagenet2012_subset/1pct` and `/10pct`, the image
lists of the official code); every other dataset gets a stratified subset drawn from the seed.
"""

import dataclasses

import numpy as np

from simclr_jax.data import splits
from simclr_jax.data.splits import ArraySplit
from simclr_jax.errors import UserError

IMAGENET_SUBSETS = {0.01: "imagenet2012_subset/1pct", 0.1: "imagenet2012_subset/10pct"}


def stratified_indices(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Sorted indices of round(fraction * N) examples, each class represented in proportion.

    Class quotas are fraction * n_c, rounded by largest remainder so they sum to the total;
    which examples fill a quota is a seeded draw.
    """
    if not 0 < fraction <= 1:
        raise UserError(f"config.label_fraction: must be in (0, 1], got {fraction}")
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    total = max(1, int(round(fraction * len(labels))))
    exact = fraction * counts
    quota = np.floor(exact).astype(int)
    # Largest remainder first; a seeded random key breaks ties between equal remainders.
    order = np.lexsort((rng.random(len(classes)), -(exact - quota)))
    quota[order[:total - quota.sum()]] += 1
    chosen = [rng.choice(np.flatnonzero(labels == c), q, replace=False)
              for c, q in zip(classes, quota, strict=True)]
    return np.sort(np.concatenate(chosen))


def subset(split: ArraySplit, indices: np.ndarray) -> ArraySplit:
    """The examples of `split` at `indices`."""
    labels = split.labels[indices] if split.labels is not None else None
    return dataclasses.replace(split, images=split.images[indices], labels=labels)


def load_train_split(dataset: str, split: str, data_dir: str | None, fraction: float,
                     seed: int) -> ArraySplit:
    """The training split at `fraction` of its labels (the whole split when fraction is 1)."""
    if dataset == "imagenet2012" and fraction in IMAGENET_SUBSETS and split == "train":
        return splits.load_split(IMAGENET_SUBSETS[fraction], "train", data_dir)
    full = splits.load_split(dataset, split, data_dir)
    if fraction == 1:
        return full
    if full.labels is None:
        raise UserError(f"config.label_fraction={fraction} needs labels, but split {split!r} "
                        f"of dataset {dataset!r} has none")
    return subset(full, stratified_indices(full.labels, fraction, seed))
