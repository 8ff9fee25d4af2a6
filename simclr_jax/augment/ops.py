"""Composable device-side augmentation ops for the paper's augmentation ablations (Figure 5).

Each op maps (key, image (H, W, 3) float in [0, 1], config) -> image of the same shape and
range. A view's ops are a comma-separated list applied in order (`config.view1_ops`,
`config.view2_ops`); an empty list is the identity. The value 'default' keeps the standard
pipeline (host crop + flip, then views.augment_view), so existing configs are unchanged.

With custom ops the host does not crop (it passes the whole image, resized), so 'crop' here is
the only crop and "no crop" really means none; it is the pipeline's crop (augment/crop.py: the
same window sampler and bicubic resize), so the experiments crop as the default pipeline does.
"""

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from simclr_jax.augment import crop
from simclr_jax.augment.blur import gaussian_blur
from simclr_jax.augment.color import GREY_WEIGHTS, color_jitter, to_grayscale

DEFAULT = "default"


def flip(key: jax.Array, x: jnp.ndarray) -> jnp.ndarray:
    """Horizontal flip with p = 0.5."""
    return jnp.where(jax.random.uniform(key) < 0.5, x[:, ::-1], x)


def color_drop(x: jnp.ndarray) -> jnp.ndarray:
    """Colour drop: always greyscale (3 equal channels)."""
    return to_grayscale(x)


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


def _maybe(key: jax.Array, prob: float, op, x: jnp.ndarray) -> jnp.ndarray:
    k_apply, k_op = jax.random.split(key)
    return jnp.where(jax.random.uniform(k_apply) < prob, op(k_op, x), x)


def _jitter(key, x, c):
    return _maybe(key, c.color_jitter_prob,
                  lambda k, y: color_jitter(k, y, c.color_jitter_strength,
                                             c.color_jitter_impl), x)


def _grey(key, x, c):
    return _maybe(key, c.grayscale_prob, lambda k, y: to_grayscale(y), x)


def _color(key, x, c):
    """The paper's colour distortion: jitter (p = color_jitter_prob), then grey (grayscale_prob)."""
    k1, k2 = jax.random.split(key)
    return _grey(k2, _jitter(k1, x, c), c)


# name -> fn(key, image, config). Probabilities and strengths come from the config.
OPS = {
    "crop": lambda k, x, c: crop.random_resized_crop(k, x, c.crop_area_min),
    "flip": lambda k, x, c: flip(k, x),
    "jitter": _jitter,
    "grey": _grey,
    "color": _color,
    "drop": lambda k, x, c: color_drop(x),
    "blur": lambda k, x, c: gaussian_blur(k, x),
    "pblur": lambda k, x, c: _maybe(k, c.blur_prob, gaussian_blur, x),
    "noise": lambda k, x, c: gaussian_noise(k, x, c.noise_std),
    "sobel": lambda k, x, c: sobel(x),
    "cutout": lambda k, x, c: cutout(k, x, c.cutout_fraction),
    "rotate": lambda k, x, c: rotate(k, x),
}


def parse_ops(spec: str) -> list[str]:
    """'crop, color' -> ['crop', 'color']; '' or 'none' -> [] (identity); ValueError if unknown."""
    names = [s.strip() for s in spec.split(",") if s.strip()]
    if names == ["none"]:
        return []
    unknown = [n for n in names if n not in OPS]
    if unknown:
        raise ValueError(f"unknown augmentation op {unknown[0]!r}; known ops: "
                         f"{', '.join(OPS)} (or '{DEFAULT}' for the standard pipeline)")
    return names


def uses_default(config: ml_collections.ConfigDict) -> bool:
    """True when both views use the standard pipeline (host crop + flip, device colour)."""
    return config.view1_ops == DEFAULT and config.view2_ops == DEFAULT


def apply_ops(key: jax.Array, x: jnp.ndarray, names: list[str],
              config: ml_collections.ConfigDict) -> jnp.ndarray:
    """Applies the named ops in order to one [0, 1] image; op j draws from fold_in(key, j)."""
    for j, name in enumerate(names):
        x = OPS[name](jax.random.fold_in(key, j), x, config)
    return jnp.clip(x, 0.0, 1.0)


def augment_batch(key: jax.Array, images: jnp.ndarray, spec: str,
                  config: ml_collections.ConfigDict) -> jnp.ndarray:
    """Augments a uint8 batch (B, H, W, 3) with the ops in `spec`; example i uses
    fold_in(key, i), i its index in the global batch (as views.augment_batch)."""
    if spec == DEFAULT:  # one view standard, the other custom: the standard ops on device
        names = ["crop", "flip", "color"] + (["pblur"] if config.blur_prob > 0 else [])
    else:
        names = parse_ops(spec)
    x = images.astype(jnp.float32) / 255.0
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(images.shape[0]))
    return jax.vmap(lambda k, im: apply_ops(k, im, names, config))(keys, x)
