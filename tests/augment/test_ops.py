"""Augmentation ops against independent references on known images."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage
import tensorflow as tf

from simclr_jax.augment import crop, recipes, views
from simclr_jax.augment import ops as augment_ops
from simclr_jax.config import base_config, validate
from simclr_jax.data import pretrain_input
from simclr_jax.errors import UserError


def known_image(size: int = 16) -> np.ndarray:
    """A smooth colour image with distinct corners, values in (0, 1)."""
    rows, cols = np.meshgrid(np.linspace(0, 1, size), np.linspace(0, 1, size), indexing="ij")
    img = np.stack([rows, cols, 0.5 + 0.4 * np.sin(6 * rows * cols)], -1)
    return (0.05 + 0.9 * img).astype(np.float32)


def keys(n: int) -> list[jax.Array]:
    return [jax.random.PRNGKey(i) for i in range(n)]


def test_rotation_is_a_uniform_choice_of_np_rot90():
    img = known_image()
    counts = np.zeros(4)
    for k in keys(80):
        out = np.asarray(augment_ops.rotate(k, jnp.asarray(img)))
        match = [r for r in range(4) if np.array_equal(out, np.rot90(img, r, axes=(0, 1)))]
        assert len(match) == 1
        counts[match[0]] += 1
    assert counts.min() >= 10, counts  # each of 0/90/180/270 drawn (expected 20 each)


def test_sobel_matches_scipy_magnitude():
    img = known_image()
    grey = img @ np.array([0.2989, 0.5870, 0.1140])
    expected = np.hypot(scipy.ndimage.sobel(grey, axis=0), scipy.ndimage.sobel(grey, axis=1))
    out = np.asarray(augment_ops.sobel(jnp.asarray(img)))
    assert out.shape == img.shape
    for c in range(3):
        np.testing.assert_allclose(out[..., c], expected / (4 * np.sqrt(2)), atol=1e-5)


@pytest.mark.parametrize("fraction", [0.25, 0.5])
def test_cutout_zeroes_one_square_of_the_right_area(fraction):
    img = known_image(16)
    side = round(fraction * 16)
    for k in keys(10):
        out = np.asarray(augment_ops.cutout(k, jnp.asarray(img), fraction))
        zero = np.all(out == 0, axis=-1)
        assert zero.sum() == side * side
        ys, xs = np.nonzero(zero)
        assert ys.max() - ys.min() + 1 == side and xs.max() - xs.min() + 1 == side
        np.testing.assert_array_equal(out[~zero], img[~zero])


def test_gaussian_noise_statistics():
    img = np.full((64, 64, 3), 0.5, np.float32)  # far from the clip bounds at std 0.05
    out = np.asarray(augment_ops.gaussian_noise(jax.random.PRNGKey(0), jnp.asarray(img), 0.05))
    noise = (out - img).ravel()
    assert abs(noise.mean()) < 0.003  # 3 standard errors of the mean
    assert abs(noise.std() - 0.05) < 0.002
    assert abs(np.corrcoef(noise[:-1], noise[1:])[0, 1]) < 0.03  # independent pixels


def test_color_drop_is_tf_greyscale():
    img = known_image()
    expected = tf.image.grayscale_to_rgb(tf.image.rgb_to_grayscale(img)).numpy()
    drop = recipes.ABLATIONS["drop"]
    np.testing.assert_allclose(np.asarray(drop(None, jnp.asarray(img), None)), expected,
                               atol=1e-6)


def test_flip_is_identity_or_mirror():
    img = known_image()
    outs = [np.asarray(crop.flip(k, jnp.asarray(img))) for k in keys(20)]
    flipped = [np.array_equal(o, img[:, ::-1]) for o in outs]
    assert all(f or np.array_equal(o, img) for f, o in zip(flipped, outs, strict=True))
    assert 0 < sum(flipped) < 20


def test_crop_of_a_ramp_is_a_monotone_zoom_covering_at_least_area_min():
    ramp = np.broadcast_to(np.linspace(0, 1, 32)[None, :, None], (32, 32, 3)).astype(np.float32)
    for k in keys(10):
        out = np.asarray(crop.random_resized_crop(k, jnp.asarray(ramp), 0.3))
        row = out[16, :, 0]
        assert np.all(np.diff(row) >= -1e-5)  # no flip, no reordering
        np.testing.assert_allclose(out[..., 0], np.broadcast_to(row, (32, 32)), atol=1e-5)
        # The window spans >= sqrt(0.3 * 3/4) of the width (area and aspect bounds).
        assert row[-1] - row[0] >= np.sqrt(0.3 * 0.75) - 0.1


def test_empty_spec_is_identity_and_ops_compose_in_order():
    aug = recipes.Augmentation.from_config(base_config())
    imgs = (np.random.default_rng(0).integers(0, 256, (4, 16, 16, 3))).astype(np.uint8)

    def augment(spec: str) -> jax.Array:
        names = recipes.parse_ops(spec)
        return views.augment_batch(jax.random.PRNGKey(0), jnp.asarray(imgs),
                                   lambda k, x: recipes.apply_ops(k, x, names, aug))

    np.testing.assert_allclose(np.asarray(augment("")), imgs / 255.0, atol=1e-6)
    both, only = augment("drop,sobel"), augment("sobel")
    np.testing.assert_allclose(np.asarray(both), np.asarray(only), atol=2e-4)  # sobel greys


@pytest.mark.parametrize("spec", ["crop,color", ""])
def test_with_custom_ops_the_host_passes_the_whole_image_unflipped(spec):
    """The device does all the augmenting ('crop' and 'flip' are ops there): the host sends
    both views as the whole image, never cropped nor flipped (else 'no flip' would flip)."""
    img = (known_image(32) * 255).astype(np.uint8)
    c = base_config()
    c.image_size, c.view1_ops, c.view2_ops = 32, spec, "color"
    host_views = pretrain_input.host_views(c)
    for position in range(8):
        out = host_views(tf.constant(img), tf.constant(position, tf.int64))
        np.testing.assert_array_equal(out["view1"].numpy(), img)
        np.testing.assert_array_equal(out["view2"].numpy(), img)


@pytest.mark.parametrize("key,value,message", [
    ("view1_ops", "crop,solarize", "config.view1_ops: unknown augmentation op 'solarize'"),
    ("view2_ops", "rotate,blurr", "config.view2_ops: unknown augmentation op 'blurr'"),
    ("loss", "infonce", "config.loss: must be one of"),
])
def test_bad_op_or_loss_name_is_one_user_error(key, value, message):
    c = base_config()
    c[key] = value
    with pytest.raises(UserError, match=message):
        validate(c)
