"""Crops and augmentation placements: fused decode-and-crop, the device crop, host vs device."""

import io

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from scipy import stats

from simclr_jax import augment, parallel
from simclr_jax.data import device_crop, host_augment, pipeline
from tests.data_helpers import smooth_image
from tests.helpers import tiny_config


def jpeg(image: np.ndarray, subsampling: int = 2) -> tf.Tensor:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "JPEG", quality=90, subsampling=subsampling)
    return tf.constant(buf.getvalue())


def noisy(seed: int, size) -> np.ndarray:
    image = smooth_image(seed, size).astype(int)
    noise = np.random.default_rng(seed).integers(-20, 20, image.shape)
    return np.clip(image + noise, 0, 255).astype(np.uint8)


WINDOWS = [((0, 0), (47, 61)), ((5, 7), (20, 30)), ((13, 3), (33, 40)), ((1, 1), (9, 9))]


@pytest.mark.parametrize("subsampling", [0, 2])
@pytest.mark.parametrize("window", WINDOWS)
def test_fused_decode_and_crop_has_the_plain_crops_geometry(window, subsampling):
    data = jpeg(noisy(0, (61, 47)), subsampling)
    (top, left), (h, w) = window
    fused = host_augment.decode_window(
        data, lambda shape: (tf.constant([top, left]), tf.constant([h, w]))).numpy()
    plain = host_augment.decode(data).numpy()[top:top + h, left:left + w]
    assert fused.shape == plain.shape == (h, w, 3)
    # Identical pixels, except where the window's edge splits a pair of subsampled chroma
    # samples: the decoder's chroma upsampling then lacks the neighbour outside the window.
    np.testing.assert_array_equal(fused[:, 1:-1], plain[:, 1:-1])
    assert np.abs(fused.astype(int) - plain).mean() < 2


def test_random_view_is_the_same_from_jpeg_bytes_and_from_decoded_pixels():
    data = jpeg(noisy(1, (64, 48)), subsampling=0)
    decoded = host_augment.decode(data)
    seed = tf.constant([3, 4], tf.int64)
    for i in range(5):
        s = host_augment.fold(seed, i)
        a = host_augment.crop_and_flip(data, s, 24, 0.08).numpy()
        b = host_augment.crop_and_flip(decoded, s, 24, 0.08).numpy()
        np.testing.assert_array_equal(a, b)


def test_device_crop_equals_the_host_crop_for_a_fixed_window():
    image = noisy(2, (45, 37))
    canvas = np.zeros((48, 48, 3), np.uint8)
    canvas[:37, :45] = image
    for (top, left), (h, w) in [((3, 5), (20, 30)), ((0, 0), (37, 45)), ((10, 2), (7, 9))]:
        host = host_augment.resize(tf.constant(image[top:top + h, left:left + w]), 32)
        dev = device_crop.crop_resize(jnp.asarray(canvas, jnp.float32), jnp.array([top, left]),
                                      jnp.array([h, w]), 32)
        assert np.abs(np.asarray(dev) - host.numpy()).max() <= 1.0  # rounding ties only


@pytest.mark.parametrize("shape", [(32, 32), (375, 500)])
def test_device_crop_windows_follow_tfs_sampler(shape):
    n = 1500
    host = np.array([np.concatenate([b.numpy(), s.numpy()]) for b, s in (
        host_augment.random_window(tf.constant(shape), tf.constant([i, 7], tf.int64), 0.08)
        for i in range(n))])
    keys = jax.random.split(jax.random.PRNGKey(0), n)
    begin, size = jax.vmap(lambda k: device_crop.sample_window(
        k, jnp.int32(shape[0]), jnp.int32(shape[1]), 0.08))(keys)
    dev = np.concatenate([np.asarray(begin), np.asarray(size)], axis=1)
    for name, f in [("area", lambda x: x[:, 2] * x[:, 3]), ("aspect", lambda x: x[:, 3] / x[:, 2]),
                    ("top", lambda x: x[:, 0]), ("left", lambda x: x[:, 1])]:
        assert stats.ks_2samp(f(host), f(dev)).pvalue > 1e-3, name
    assert (dev[:, 0] + dev[:, 2] <= shape[0]).all() and (dev[:, 1] + dev[:, 3] <= shape[1]).all()


def test_canvas_keeps_the_aspect_and_pads():
    image = noisy(3, (90, 40))  # 40 x 90 (h x w)
    canvas, valid = host_augment.to_canvas(jpeg(image, 0), 30)
    assert canvas.shape == (30, 30, 3) and valid.numpy().tolist() == [13, 30]
    assert not canvas.numpy()[13:].any()


def test_device_crop_does_not_depend_on_sharding():
    canvases = np.random.default_rng(0).integers(0, 256, (16, 12, 12, 3), dtype=np.uint8)
    valid = np.tile([[12, 10]], (16, 1)).astype(np.int32)
    f = jax.jit(lambda k, c, v: device_crop.crop_flip_batch(k, c, v, 8, 0.08))
    key = jax.random.PRNGKey(5)
    single = f(key, jnp.asarray(canvases), jnp.asarray(valid))
    sharding = parallel.batch_sharded(parallel.make_mesh())
    sharded = f(key, jax.device_put(canvases, sharding), jax.device_put(valid, sharding))
    np.testing.assert_allclose(np.asarray(single), np.asarray(sharded), atol=1e-4)


def views_stats(views: np.ndarray) -> dict[str, np.ndarray]:
    """Per view: channel means (N, 3), channel variances (N, 3), greyscale (N,)."""
    return {"mean": views.mean(axis=(1, 2)), "var": views.var(axis=(1, 2)),
            "grey": np.abs(views - views.mean(-1, keepdims=True)).max(axis=(1, 2, 3)) < 1e-6}


def test_host_and_device_augmentation_draw_from_the_same_distribution(tfds_dir):
    """augment_on='host' (all in tf.data) vs 'device' (tf.data crop, jnp colour): same
    per-channel means and variances and greyscale fraction, over many views."""
    n, size = 3000, 24  # at 24 px the blur kernel has radius 1: blur is part of the test
    images = np.stack([smooth_image(i, (32, 32)) for i in range(40)])
    config = tiny_config(tfds_dir, image_size=size, blur_prob=0.5, color_jitter_strength=1.0)

    def host_views(augment_on: str) -> np.ndarray:
        config.augment_on = augment_on
        fn = pipeline.host_views(config)
        ds = tf.data.Dataset.range(n).map(
            lambda p: fn(tf.gather(images, p % len(images)), p)["view1"],
            num_parallel_calls=tf.data.AUTOTUNE)
        return np.stack(list(ds.batch(500).as_numpy_iterator())).reshape(n, size, size, 3)

    on_host = views_stats(host_views("host") / 255.0)
    on_device = views_stats(np.asarray(augment.augment_batch(
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


def test_center_crop_resize_fused_and_cifar_rules():
    image = noisy(4, (80, 60))
    data = jpeg(image, 0)
    fused = host_augment.center_crop_resize(data, 48).numpy()
    plain = host_augment.center_crop_resize(host_augment.decode(data), 48).numpy()
    np.testing.assert_array_equal(fused, plain)
    small = smooth_image(5, (32, 32))
    np.testing.assert_array_equal(host_augment.center_crop_resize(small, 32).numpy(), small)


@pytest.mark.parametrize("transpose", [False, True])
def test_square_keeps_the_aspect_and_takes_the_centre(transpose):
    """40 x 80: the shorter side becomes 16, so the square is the middle half of the width
    (green here); red and blue bands outside it must not show. Also for the tall image."""
    image = np.zeros((40, 80, 3), np.uint8)
    image[:, :20, 0] = image[:, 60:, 2] = image[:, 20:60, 1] = 255
    if transpose:
        image = image.transpose(1, 0, 2)
    out = host_augment.square(tf.constant(image), 16).numpy()
    assert out.shape == (16, 16, 3)
    inner = out[2:-2, 2:-2].astype(int)
    assert (inner[..., 1] >= 250).all() and (inner[..., [0, 2]] <= 5).all()
