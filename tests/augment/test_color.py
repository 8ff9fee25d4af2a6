"""Device colour ops and blur against TensorFlow's tf.image reference ops; their rates."""

import jax
import jax.numpy as jnp
import numpy as np
import tensorflow as tf

from simclr_jax.augment import blur, color, views
from simclr_jax.core import parallel


def image(seed=0, size=12):
    return np.random.default_rng(seed).uniform(size=(size, size, 3)).astype(np.float32)


def test_hsv_round_trip_matches_tf():
    x = image()
    np.testing.assert_allclose(color.rgb_to_hsv(jnp.asarray(x)), tf.image.rgb_to_hsv(x),
                               atol=1e-5)
    np.testing.assert_allclose(color.hsv_to_rgb(color.rgb_to_hsv(jnp.asarray(x))), x,
                               atol=1e-5)


def test_colour_ops_match_tf_image():
    x = image(1)
    np.testing.assert_allclose(color.adjust_contrast(x, 1.7), tf.image.adjust_contrast(x, 1.7),
                               atol=1e-5)
    np.testing.assert_allclose(color.adjust_saturation(x, 0.4),
                               tf.image.adjust_saturation(x, 0.4), atol=1e-4)
    np.testing.assert_allclose(color.adjust_hue(x, 0.15), tf.image.adjust_hue(x, 0.15),
                               atol=1e-4)
    grey = tf.image.grayscale_to_rgb(tf.image.rgb_to_grayscale(x))
    np.testing.assert_allclose(color.to_grayscale(jnp.asarray(x)), grey, atol=1e-5)


def test_blur_is_normalised_gaussian():
    x = np.zeros((40, 40, 3), np.float32)
    x[20, 20] = 1.0
    y = np.asarray(blur.gaussian_blur(jax.random.PRNGKey(0), jnp.asarray(x)))
    assert np.isclose(y.sum(), 3.0, atol=1e-4)  # mass kept away from the borders
    assert y[20, 20, 0] < 1.0 and y[20, 21, 0] > 0 and y[20, 23, 0] == 0  # radius 40//10//2=2


def test_grey_and_jitter_rates():
    """Over many examples: greyscale with p=0.2, identity (no jitter, no grey) with 0.8*0.2."""
    imgs = np.tile((image(2, 8) * 255).astype(np.uint8), (2000, 1, 1, 1))
    out = np.asarray(views.augment_batch(jax.random.PRNGKey(1), imgs, 0.5))
    spread = np.abs(out - out.mean(-1, keepdims=True)).max(axis=(1, 2, 3))
    grey = spread < 1e-5
    same = np.abs(out - imgs / 255.0).max(axis=(1, 2, 3)) < 1e-6
    assert abs(grey.mean() - 0.2) < 0.03
    assert abs(same.mean() - 0.2 * 0.8) < 0.03


def test_batch_augmentation_does_not_depend_on_sharding():
    imgs = (np.random.default_rng(3).uniform(size=(16, 8, 8, 3)) * 255).astype(np.uint8)
    f = jax.jit(lambda k, x: views.augment_batch(k, x, 1.0, blur_prob=0.5))
    key = jax.random.PRNGKey(7)
    single = f(key, jnp.asarray(imgs))
    mesh = parallel.make_mesh()
    sharded = f(key, jax.device_put(imgs, parallel.batch_sharded(mesh)))
    np.testing.assert_allclose(np.asarray(single), np.asarray(sharded), atol=1e-6)
