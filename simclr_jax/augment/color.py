"""Colour distortion in jnp (device side): jitter in a random order, and greyscale.

On [0, 1] float images, inside the jitted train step or (augment_on='host') on the host's CPU
(augment/views.py). Conventions follow tf.image (tests compare against it).
"""

import jax
import jax.numpy as jnp
import numpy as np

# tf.image.rgb_to_grayscale's weights. numpy, not jnp: a module-level jnp array would start the
# XLA backend at import, before jax.distributed.initialize may run.
GREY_WEIGHTS = np.array([0.2989, 0.5870, 0.1140], np.float32)
# Brightness as the official data_util.random_brightness: 'simclrv2' multiplicative (what the
# official code runs, hard-coded there), 'simclrv1' additive (tf.image.random_brightness).
JITTER_IMPLS = ("simclrv2", "simclrv1")

def to_grayscale(x: jnp.ndarray) -> jnp.ndarray:
    """RGB -> grey, kept as 3 channels."""
    return jnp.broadcast_to(jnp.sum(x * GREY_WEIGHTS, axis=-1, keepdims=True), x.shape)

def rgb_to_hsv(rgb: jnp.ndarray) -> jnp.ndarray:
    """Same convention as tf.image.rgb_to_hsv: h, s, v all in [0, 1]."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    v = jnp.max(rgb, axis=-1)
    c = v - jnp.min(rgb, axis=-1)
    safe_c = jnp.where(c > 0, c, 1.0)
    s = jnp.where(v > 0, c / jnp.where(v > 0, v, 1.0), 0.0)
    h = jnp.where(v == r, (g - b) / safe_c,
                  jnp.where(v == g, 2.0 + (b - r) / safe_c, 4.0 + (r - g) / safe_c))
    h = jnp.where(c > 0, (h / 6.0) % 1.0, 0.0)
    return jnp.stack([h, s, v], axis=-1)

def hsv_to_rgb(hsv: jnp.ndarray) -> jnp.ndarray:
    """Inverse of rgb_to_hsv."""
    h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    k = (jnp.array([5.0, 3.0, 1.0]) + h[..., None] * 6.0) % 6.0
    f = jnp.clip(jnp.minimum(k, 4.0 - k), 0.0, 1.0)
    return v[..., None] - v[..., None] * s[..., None] * f

def adjust_brightness(x, factor):
    """SimCLRv2 brightness: multiplicative."""
    return x * factor

def random_brightness(key: jax.Array, x: jnp.ndarray, b: float, impl: str = "simclrv2"
                      ) -> jnp.ndarray:
    """Official random_brightness: x * U[max(0, 1-b), 1+b] ('simclrv2') or x + U[-b, b]
    ('simclrv1')."""
    if impl == "simclrv1":
        return x + jax.random.uniform(key, (), minval=-b, maxval=b)
    return adjust_brightness(x, jax.random.uniform(key, (), minval=max(0.0, 1 - b),
                                                   maxval=1 + b))

def adjust_contrast(x, factor):
    """tf.image.adjust_contrast: scale each channel's deviation from its spatial mean."""
    mean = jnp.mean(x, axis=(0, 1), keepdims=True)
    return (x - mean) * factor + mean

def adjust_saturation(x, factor):
    """tf.image.adjust_saturation: scale S in HSV."""
    hsv = rgb_to_hsv(x)
    return hsv_to_rgb(hsv.at[..., 1].set(jnp.clip(hsv[..., 1] * factor, 0.0, 1.0)))

def adjust_hue(x, delta):
    """tf.image.adjust_hue: rotate H in HSV by delta (fraction of a turn)."""
    hsv = rgb_to_hsv(x)
    return hsv_to_rgb(hsv.at[..., 0].set((hsv[..., 0] + delta) % 1.0))

def jitter_draws(key: jax.Array, strength: float, impl: str = "simclrv2"
                 ) -> tuple[jnp.ndarray, jnp.ndarray]:
    """The random part of color_jitter: (order (4,) int, factors (4,) for brightness (a factor,
    or with impl='simclrv1' an additive delta, as random_brightness draws them), contrast,
    saturation (0.8 s) and the hue delta (0.2 s))."""
    if impl not in JITTER_IMPLS:
        raise ValueError(f"unknown colour jitter impl {impl!r}; expected one of {JITTER_IMPLS}")
    b, c, s, h = 0.8 * strength, 0.8 * strength, 0.8 * strength, 0.2 * strength
    k_order, k_b, k_c, k_s, k_h = jax.random.split(key, 5)
    brightness = ((-b, b) if impl == "simclrv1" else (max(0.0, 1 - b), 1 + b))
    factors = jnp.stack([
        jax.random.uniform(k_b, (), minval=brightness[0], maxval=brightness[1]),
        jax.random.uniform(k_c, (), minval=max(0.0, 1 - c), maxval=1 + c),
        jax.random.uniform(k_s, (), minval=max(0.0, 1 - s), maxval=1 + s),
        jax.random.uniform(k_h, (), minval=-h, maxval=h)])
    return jax.random.permutation(k_order, 4), factors


def _jitter_op(x: jnp.ndarray, op: jnp.ndarray, factors: jnp.ndarray,
               additive_brightness: bool = False) -> jnp.ndarray:
    """Op `op` (0 brightness, 1 contrast, 2 saturation, 3 hue) of x, evaluating one affine map
    and one HSV round trip instead of all four ops.

    Under vmap a lax.switch over the four ops computes every branch for every image; here
    brightness and contrast share (x - m) * f + m (m = 0 for brightness: exactly x * f), and
    saturation and hue share one HSV round trip (the other channel passes through unchanged),
    so the values are bit-identical to the ops above at about half the cost.
    """
    mean = jnp.mean(x, axis=(0, 1), keepdims=True)
    if additive_brightness:  # SimCLRv1's x + delta
        affine = jnp.where(op == 0, x + factors[0], (x - mean) * factors[1] + mean)
    else:
        m = jnp.where(op == 1, mean, 0.0)
        affine = (x - m) * jnp.where(op == 0, factors[0], factors[1]) + m
    hsv = rgb_to_hsv(x)
    hue = jnp.where(op == 3, (hsv[..., 0] + factors[3]) % 1.0, hsv[..., 0])
    sat = jnp.where(op == 2, jnp.clip(hsv[..., 1] * factors[2], 0.0, 1.0), hsv[..., 1])
    rotated = hsv_to_rgb(jnp.stack([hue, sat, hsv[..., 2]], axis=-1))
    return jnp.where(op < 2, affine, rotated)


def color_jitter(key: jax.Array, x: jnp.ndarray, strength: float, impl: str = "simclrv2"
                 ) -> jnp.ndarray:
    """Brightness (`impl`: see random_brightness), contrast, saturation (0.8 s) and hue (0.2 s)
    in a random order.

    Clipped to [0, 1] after each op, as in the official code.
    """
    order, factors = jitter_draws(key, strength, impl)
    for slot in range(4):
        x = jnp.clip(_jitter_op(x, order[slot], factors, impl == "simclrv1"), 0.0, 1.0)
    return x
