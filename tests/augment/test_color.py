"""Device colour ops and blur against TensorFlow's tf.image reference ops; their rates."""

import jax
import jax.numpy as jnp
import numpy as np
import tensorflow as tf

from simclr_jax.augment import blur, color, recipes, views
from simclr_jax.config import base_config
from simclr_jax.core import parallel


def paper_color(strength: float, blur_prob: float = 0.0):
    """fn(key, image): the paper's colour recipe at `strength` (p 0.8 jitter, 0.2 grey)."""
    config = base_config()
    config.update(color_jitter_strength=strength, blur_prob=blur_prob)
    aug = recipes.Augmentation.from_config(config)
    return lambda key, x: recipes.paper_color(key, x, aug)


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
    out = np.asarray(views.augment_batch(jax.random.PRNGKey(1), imgs, paper_color(0.5)))
    spread = np.abs(out - out.mean(-1, keepdims=True)).max(axis=(1, 2, 3))
    grey = spread < 1e-5
    same = np.abs(out - imgs / 255.0).max(axis=(1, 2, 3)) < 1e-6
    assert abs(grey.mean() - 0.2) < 0.03
    assert abs(same.mean() - 0.2 * 0.8) < 0.03


def test_batch_augmentation_does_not_depend_on_sharding():
    imgs = (np.random.default_rng(3).uniform(size=(16, 8, 8, 3)) * 255).astype(np.uint8)
    f = jax.jit(lambda k, x: views.augment_batch(k, x, paper_color(1.0, blur_prob=0.5)))
    key = jax.random.PRNGKey(7)
    single = f(key, jnp.asarray(imgs))
    mesh = parallel.make_mesh()
    sharded = f(key, jax.device_put(imgs, parallel.batch_sharded(mesh)))
    np.testing.assert_allclose(np.asarray(single), np.asarray(sharded), atol=1e-6)


def test_brightness_impls_draw_the_official_distributions():
    """On a constant grey image contrast, saturation and hue are identities, so the jitter is
    the brightness op alone (then clipped): 'simclrv2' x * U[1-b, 1+b], 'simclrv1' x + U[-b, b]
    (tf.image.random_brightness), b = 0.8 s, against the analytic distributions
    (Kolmogorov-Smirnov, and the atom at 0 that clipping makes)."""
    from scipy import stats

    n, strength, level = 3000, 0.5, 0.25
    b = 0.8 * strength
    x = np.full((4, 4, 3), level, np.float32)
    keys = jax.random.split(jax.random.PRNGKey(0), n)
    for impl in color.JITTER_IMPLS:
        device = np.asarray(jax.jit(jax.vmap(
            lambda k, impl=impl: color.color_jitter(k, jnp.asarray(x), strength, impl)))(keys))
        assert np.ptp(device.reshape(n, -1), axis=1).max() < 1e-6  # still a constant image
        v = device[:, 0, 0, 0]
        if impl == "simclrv2":
            assert stats.kstest(v, stats.uniform(level * (1 - b), level * 2 * b).cdf
                                ).pvalue > 1e-3
        else:
            zero = level - b < 0 and np.mean(v == 0)
            p0 = (b - level) / (2 * b)  # P(level + U[-b, b] < 0)
            assert abs(zero - p0) < 4 * np.sqrt(p0 * (1 - p0) / n)
            assert stats.kstest(v[v > 0], stats.uniform(0, level + b).cdf).pvalue > 1e-3
def _switch_jitter(key, x, strength):
    """The jitter as a lax.switch over the four separate ops (the formulation color_jitter
    replaced): under vmap it evaluates all four ops in every slot."""
    order, f = color.jitter_draws(key, strength)
    ops = [lambda y: color.adjust_brightness(y, f[0]), lambda y: color.adjust_contrast(y, f[1]),
           lambda y: color.adjust_saturation(y, f[2]), lambda y: color.adjust_hue(y, f[3])]
    for slot in range(4):
        x = jnp.clip(jax.lax.switch(order[slot], ops, x), 0.0, 1.0)
    return x


def test_jitter_applies_the_drawn_ops_in_the_drawn_order_like_tf_image():
    """Per image: tf.image's contrast, saturation and hue (and brightness x * f, SimCLRv2's
    multiplicative form) in the drawn order, clipped after each, as the official code."""
    x = image(4, 10)
    tf_ops = [lambda y, f: y * f, tf.image.adjust_contrast, tf.image.adjust_saturation,
              tf.image.adjust_hue]
    orders = set()
    for seed in range(6):
        key = jax.random.PRNGKey(seed)
        order, f = (np.asarray(a) for a in color.jitter_draws(key, 1.0))
        orders.add(tuple(order))
        expected = tf.constant(x)
        for op in order:
            expected = tf.clip_by_value(tf_ops[op](expected, float(f[op])), 0.0, 1.0)
        np.testing.assert_allclose(color.color_jitter(key, jnp.asarray(x), 1.0), expected,
                                   atol=1e-4)
    assert len(orders) > 1


def test_batched_jitter_is_bit_identical_to_the_switch_over_all_ops():
    """The one-affine-one-HSV formulation changes no value: the augmentation stream (and every
    measured result) is the same as with the lax.switch over the four ops."""
    imgs = jnp.asarray(np.random.default_rng(5).uniform(size=(64, 8, 8, 3)), jnp.float32)
    keys = jax.random.split(jax.random.PRNGKey(3), 64)
    ours = jax.jit(jax.vmap(lambda k, im: color.color_jitter(k, im, 0.5)))(keys, imgs)
    ref = jax.jit(jax.vmap(lambda k, im: _switch_jitter(k, im, 0.5)))(keys, imgs)
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(ref))
