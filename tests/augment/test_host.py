"""The two placements of the colour augmentation (augment_on='host' / 'device') draw from the
same distribution."""

import jax
import numpy as np
import tensorflow as tf
from scipy import stats

from simclr_jax.augment import views
from simclr_jax.data import pretrain_input


def views_stats(views: np.ndarray) -> dict[str, np.ndarray]:
    """Per view: channel means (N, 3), channel variances (N, 3), greyscale (N,)."""
    return {"mean": views.mean(axis=(1, 2)), "var": views.var(axis=(1, 2)),
            "grey": np.abs(views - views.mean(-1, keepdims=True)).max(axis=(1, 2, 3)) < 1e-6}


def test_host_and_device_augmentation_draw_from_the_same_distribution(tiny_config,
                                                                     smooth_image):
    """augment_on='host' (all in tf.data) vs 'device' (tf.data crop, jnp colour): same
    per-channel means and variances and greyscale fraction, over many views."""
    n, size = 3000, 24  # at 24 px the blur kernel has radius 1: blur is part of the test
    images = np.stack([smooth_image(i, (32, 32)) for i in range(40)])
    config = tiny_config(image_size=size, blur_prob=0.5, color_jitter_strength=1.0)

    def host_views(augment_on: str) -> np.ndarray:
        config.augment_on = augment_on
        fn = pretrain_input.host_views(config)
        ds = tf.data.Dataset.range(n).map(
            lambda p: fn(tf.gather(images, p % len(images)), p)["view1"],
            num_parallel_calls=tf.data.AUTOTUNE)
        return np.stack(list(ds.batch(500).as_numpy_iterator())).reshape(n, size, size, 3)

    on_host = views_stats(host_views("host") / 255.0)
    on_device = views_stats(np.asarray(views.augment_batch(
        jax.random.PRNGKey(1), host_views("device"), config.color_jitter_strength,
        config.color_jitter_prob, config.grayscale_prob, config.blur_prob)))
    for key in ("mean", "var"):
        a, b = on_host[key], on_device[key]
        se = np.sqrt(a.var(0) / n + b.var(0) / n)
        assert (np.abs(a.mean(0) - b.mean(0)) < 4 * se).all(), (key, a.mean(0), b.mean(0), se)
        for c in range(3):
            assert stats.ks_2samp(a[:, c], b[:, c]).pvalue > 1e-3, (key, c)
    p = config.grayscale_prob
    assert abs(on_host["grey"].mean() - p) < 4 * np.sqrt(p * (1 - p) / n)
    assert abs(on_host["grey"].mean() - on_device["grey"].mean()) < 4 * np.sqrt(
        2 * p * (1 - p) / n)
