"""The augmentation ops, each defined once, in jnp: the registry `OPS` that every recipe
(augment/recipes.py) is spelled in.

An op maps (key, image (H, W, 3) float in [0, 1], aug: recipes.Augmentation) -> an image of the
same shape and range; `random` says whether it draws from its key. The paper's colour ops live
in color.py and blur.py, its crop in crop.py; the ablations' extra ops (Figure 5) are here.
"""

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from simclr_jax.augment import crop
from simclr_jax.augment.blur import gaussian_blur
from simclr_jax.augment.color import GREY_WEIGHTS, color_jitter, to_grayscale

# An op's third argument: a recipes.Augmentation (not imported: recipes is built on this module).
Augmentation = Any


def gaussian_noise(key: jax.Array, x: jnp.ndarray, std: float) -> jnp.ndarray:
    """Adds i.i.d. N(0, std^2) per pixel and channel, then clips to [0, 1]."""
    return jnp.clip(x + std * jax.random.normal(key, x.shape, x.dtype), 0.0, 1.0)


SOBEL_X = np.array([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])


def sobel(x: jnp.ndarray) -> jnp.ndarray:
    """Sobel gradient magnitude of the greyscale image, scaled into [0, 1] (max is 4·√2).

    Edges use mirror padding (scipy.ndimage's 'reflect').
    """
    grey = jnp.sum(x * GREY_WEIGHTS, axis=-1)
    padded = jnp.pad(grey, 1, mode="symmetric")
    height, width = grey.shape

    def correlate(kernel):
        return sum(kernel[i, j] * padded[i:i + height, j:j + width]
                   for i in range(3) for j in range(3))

    magnitude = jnp.sqrt(correlate(SOBEL_X) ** 2 + correlate(SOBEL_X.T) ** 2)
    return jnp.broadcast_to((magnitude / (4.0 * math.sqrt(2.0)))[..., None], x.shape)


def cutout(key: jax.Array, x: jnp.ndarray, fraction: float) -> jnp.ndarray:
    """Zeroes one square of side round(fraction · H), placed uniformly and fully inside."""
    height, width = x.shape[0], x.shape[1]
    side = max(1, round(fraction * height))
    k_y, k_x = jax.random.split(key)
    y0 = jax.random.randint(k_y, (), 0, height - side + 1)
    x0 = jax.random.randint(k_x, (), 0, width - side + 1)
    rows, cols = jnp.arange(height)[:, None], jnp.arange(width)[None, :]
    inside = (rows >= y0) & (rows < y0 + side) & (cols >= x0) & (cols < x0 + side)
    return jnp.where(inside[..., None], 0.0, x)


def rotate(key: jax.Array, x: jnp.ndarray) -> jnp.ndarray:
    """Rotation by a uniform choice of {0, 90, 180, 270} degrees (square images)."""
    k = jax.random.randint(key, (), 0, 4)
    return jax.lax.switch(k, [lambda y, r=r: jnp.rot90(y, r, axes=(0, 1)) for r in range(4)], x)


@dataclasses.dataclass(frozen=True)
class Op:
    """One registered op: fn(key, image, aug) -> image; `random`: it draws from its key."""

    fn: Callable[[jax.Array, jnp.ndarray, Augmentation], jnp.ndarray]
    random: bool

    def __call__(self, key: Any, x: jnp.ndarray, aug: Augmentation) -> jnp.ndarray:
        return self.fn(key, x, aug)


OPS: dict[str, Op] = {
    "crop": Op(lambda k, x, a: crop.random_resized_crop(k, x, a.crop_area_min), True),
    "flip": Op(lambda k, x, a: crop.flip(k, x), True),
    "jitter": Op(lambda k, x, a: color_jitter(k, x, a.color_jitter_strength,
                                               a.color_jitter_impl), True),
    "grey": Op(lambda k, x, a: to_grayscale(x), False),
    "blur": Op(lambda k, x, a: gaussian_blur(k, x), True),
    "noise": Op(lambda k, x, a: gaussian_noise(k, x, a.noise_std), True),
    "sobel": Op(lambda k, x, a: sobel(x), False),
    "cutout": Op(lambda k, x, a: cutout(k, x, a.cutout_fraction), True),
    "rotate": Op(lambda k, x, a: rotate(k, x), True),
}
