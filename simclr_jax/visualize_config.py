"""Default config of `python -m simclr_jax.visualize`: the paper's ImageNet augmentation
(s = 1.0, blur) on scikit-image's sample photographs, which ship inside the package."""

import ml_collections

from simclr_jax.config import base_config


def get_config() -> ml_collections.ConfigDict:
    """base_config (the ImageNet recipe) reading the dataset 'skimage_photos'."""
    c = base_config()
    c.dataset = "skimage_photos"
    c.train_split = "train"
    return c
