"""The paper's crop on the host and on the device: same geometry from JPEG bytes and pixels, the
device crop equals the host crop for a window, its windows follow TF's sampler, and the ablation
'crop' op draws its windows from the same distribution as the pipeline's crop."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from simclr_jax.augment import crop, ops, tf_image
from simclr_jax.core import parallel


def test_random_view_is_the_same_from_jpeg_bytes_and_from_decoded_pixels(jpeg, noisy):
    data = jpeg(noisy(1, (64, 48)), subsampling=0)
    decoded = tf_image.decode(data)
    seed = tf.constant([3, 4], tf.int64)
    for i in range(5):
        s = tf_image.fold(seed, i)
        a = crop.crop_and_flip(data, s, 24, 0.08).numpy()
        b = crop.crop_and_flip(decoded, s, 24, 0.08).numpy()
        np.testing.assert_array_equal(a, b)


def test_device_crop_equals_the_host_crop_for_a_fixed_window(noisy):
    image = noisy(2, (45, 37))
    canvas = np.zeros((48, 48, 3), np.uint8)
    canvas[:37, :45] = image
    for (top, left), (h, w) in [((3, 5), (20, 30)), ((0, 0), (37, 45)), ((10, 2), (7, 9))]:
        host = tf_image.resize(tf.constant(image[top:top + h, left:left + w]), 32)
        dev = crop.crop_resize(jnp.asarray(canvas, jnp.float32), jnp.array([top, left]),
                                      jnp.array([h, w]), 32)
        assert np.abs(np.asarray(dev) - host.numpy()).max() <= 1.0  # rounding ties only


@pytest.mark.parametrize("shape", [(32, 32), (375, 500)])
def test_device_crop_windows_follow_tfs_sampler(shape):
    n = 1500
    host = np.array([np.concatenate([b.numpy(), s.numpy()]) for b, s in (
        crop.random_window(tf.constant(shape), tf.constant([i, 7], tf.int64), 0.08)
        for i in range(n))])
    keys = jax.random.split(jax.random.PRNGKey(0), n)
    begin, size = jax.vmap(lambda k: crop.sample_window(
        k, jnp.int32(shape[0]), jnp.int32(shape[1]), 0.08))(keys)
    dev = np.concatenate([np.asarray(begin), np.asarray(size)], axis=1)
    for name, f in [("area", lambda x: x[:, 2] * x[:, 3]), ("aspect", lambda x: x[:, 3] / x[:, 2]),
                    ("top", lambda x: x[:, 0]), ("left", lambda x: x[:, 1])]:
        assert stats.ks_2samp(f(host), f(dev)).pvalue > 1e-3, name
    assert (dev[:, 0] + dev[:, 2] <= shape[0]).all() and (dev[:, 1] + dev[:, 3] <= shape[1]).all()


def test_device_crop_does_not_depend_on_sharding():
    canvases = np.random.default_rng(0).integers(0, 256, (16, 12, 12, 3), dtype=np.uint8)
    valid = np.tile([[12, 10]], (16, 1)).astype(np.int32)
    f = jax.jit(lambda k, c, v: crop.crop_flip_batch(k, c, v, 8, 0.08))
    key = jax.random.PRNGKey(5)
    single = f(key, jnp.asarray(canvases), jnp.asarray(valid))
    sharding = parallel.batch_sharded(parallel.make_mesh())
    sharded = f(key, jax.device_put(canvases, sharding), jax.device_put(valid, sharding))
    np.testing.assert_allclose(np.asarray(single), np.asarray(sharded), atol=1e-4)


def test_ablation_crop_op_draws_the_pipelines_crop(tiny_config):
    """The 'crop' op of the augmentation ablations is the pipeline's crop: the same windows
    (area and aspect follow the host's TF sampler, as in the pipeline) and, for a given window,
    the device crop + bicubic resize (so the experiments crop as the default pipeline does)."""
    size, n = 16, 1500
    # A ramp image that encodes each pixel's coordinates: the crop's output shows its window.
    ramp = np.stack([*np.meshgrid(np.arange(size), np.arange(size), indexing="ij"),
                     np.zeros((size, size))], -1).astype(np.float32) / 255.0
    config = tiny_config(crop_area_min=0.08)
    keys = jax.random.split(jax.random.PRNGKey(3), n)
    out = np.asarray(jax.vmap(lambda k: ops.OPS["crop"](k, jnp.asarray(ramp), config))(keys))
    begin, crop_size = jax.vmap(lambda k: crop.sample_window(
        k, jnp.int32(size), jnp.int32(size), config.crop_area_min))(keys)
    for i in range(0, n, 100):  # each output is the crop_resize of its own sampled window
        want = crop.crop_resize(jnp.asarray(ramp) * 255.0, begin[i], crop_size[i], size) / 255
        np.testing.assert_allclose(out[i], np.asarray(want), atol=1e-6)
    host = np.array([s.numpy() for _, s in (
        crop.random_window(tf.constant((size, size)), tf.constant([i, 11], tf.int64), 0.08)
        for i in range(n))])
    dev = np.asarray(crop_size)
    for name, f in [("area", lambda x: x[:, 0] * x[:, 1]), ("aspect", lambda x: x[:, 1] / x[:, 0])]:
        assert stats.ks_2samp(f(host), f(dev)).pvalue > 1e-3, name
    # The window shows in the output: resampled at the output's pixel centres, the row ramp
    # spans h (S - 1) / S rows of the image, h the window's height (not the whole image).
    rows = out[:, :, :, 0] * 255
    np.testing.assert_allclose(rows.max(axis=(1, 2)) - rows.min(axis=(1, 2)),
                               dev[:, 0] * (size - 1) / size, atol=1.0)
