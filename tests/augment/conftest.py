"""Fixtures of the augmentation tests: JPEG bytes of an array, noisy test images."""

import io
from collections.abc import Callable

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image


@pytest.fixture(scope="session")
def jpeg() -> Callable[..., tf.Tensor]:
    """jpeg(image, subsampling=2): the JPEG bytes of a uint8 image, as a tf string."""

    def encode(image: np.ndarray, subsampling: int = 2) -> tf.Tensor:
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, "JPEG", quality=90, subsampling=subsampling)
        return tf.constant(buf.getvalue())

    return encode


@pytest.fixture(scope="session")
def noisy(smooth_image) -> Callable[[int, tuple[int, int]], np.ndarray]:
    """noisy(seed, (w, h)): a smooth image plus +-20 noise (JPEG artefacts then show)."""

    def make(seed: int, size) -> np.ndarray:
        image = smooth_image(seed, size).astype(int)
        noise = np.random.default_rng(seed).integers(-20, 20, image.shape)
        return np.clip(image + noise, 0, 255).astype(np.uint8)

    return make
