"""The device half of the colour augmentation, on the host (`augment_on='host'`), in tf.data.

Op for op the TF twin of augment/color.py and augment/blur.py (the same distortions, drawn from
stateless seeds), so both placements draw from the same distribution (a statistical test checks
it). Views stay uint8, so the host->device traffic stays at one byte per channel.
"""

import tensorflow as tf

from simclr_jax.augment.color import GREY_WEIGHTS
from simclr_jax.augment.tf_image import fold


def color_jitter(x: tf.Tensor, seed: tf.Tensor, strength: float, impl: str = "simclrv2"
                 ) -> tf.Tensor:
    """Brightness (multiplicative for impl='simclrv2', additive for 'simclrv1'), contrast,
    saturation (0.8 s) and hue (0.2 s) in a random order, clipped to [0, 1] after each op; x is
    float32 HxWx3 in [0, 1]."""
    b = c = s = 0.8 * strength
    h = 0.2 * strength

    def uniform(i: int, low: float, high: float) -> tf.Tensor:
        return tf.random.stateless_uniform([], fold(seed, i), minval=low, maxval=high)

    additive = impl == "simclrv1"
    brightness = uniform(1, -b, b) if additive else uniform(1, max(0.0, 1 - b), 1 + b)
    contrast = uniform(2, max(0.0, 1 - c), 1 + c)
    saturation = uniform(3, max(0.0, 1 - s), 1 + s)
    hue = uniform(4, -h, h)
    order = tf.argsort(tf.random.stateless_uniform([4], fold(seed, 0)))
    for slot in range(4):
        x = tf.switch_case(order[slot], [
            # as augment/color.py's random_brightness
            lambda x=x: x + brightness if additive else x * brightness,
            lambda x=x: tf.image.adjust_contrast(x, contrast),
            lambda x=x: tf.image.adjust_saturation(x, saturation),
            lambda x=x: tf.image.adjust_hue(x, hue),
        ])
        x = tf.clip_by_value(x, 0.0, 1.0)
    return x

def gaussian_blur(x: tf.Tensor, seed: tf.Tensor, sigma_range=(0.1, 2.0)) -> tf.Tensor:
    """Separable Gaussian blur, kernel 10% of the side, sigma ~ U(sigma_range), zero padding."""
    radius = int(x.shape[0]) // 10 // 2
    if radius == 0:
        return x
    sigma = tf.random.stateless_uniform([], seed, minval=sigma_range[0], maxval=sigma_range[1])
    taps = tf.range(-radius, radius + 1, dtype=tf.float32)
    w = tf.exp(-(taps**2) / (2.0 * sigma**2))
    w = w / tf.reduce_sum(w)
    x = x[None]
    for kernel in (tf.reshape(w, [-1, 1, 1, 1]), tf.reshape(w, [1, -1, 1, 1])):
        x = tf.nn.depthwise_conv2d(x, tf.tile(kernel, [1, 1, 3, 1]), [1, 1, 1, 1], "SAME")
    return x[0]

def color_augment(view: tf.Tensor, seed: tf.Tensor, strength: float, jitter_prob: float,
                  grey_prob: float, blur_prob: float, jitter_impl: str = "simclrv2"
                  ) -> tf.Tensor:
    """What augment.augment_view does on the device, on the host: uint8 view in, uint8 out
    (rounding to uint8 keeps the host->device traffic at one byte per channel)."""
    x = tf.cast(view, tf.float32) / 255.0

    def draw(i: int) -> tf.Tensor:
        return tf.random.stateless_uniform([], fold(seed, i))

    x = tf.cond(draw(0) < jitter_prob,
                lambda: color_jitter(x, fold(seed, 1), strength, jitter_impl), lambda: x)
    grey = tf.reduce_sum(x * tf.constant(GREY_WEIGHTS), axis=-1, keepdims=True)
    x = tf.cond(draw(2) < grey_prob, lambda: tf.broadcast_to(grey, tf.shape(x)), lambda: x)
    if blur_prob > 0:
        x = tf.cond(draw(3) < blur_prob, lambda: gaussian_blur(x, fold(seed, 4)), lambda: x)
    x = tf.clip_by_value(x, 0.0, 1.0)
    return tf.cast(tf.round(x * 255.0), tf.uint8)
