"""Host image primitives: fused decode-and-crop, the crop canvas, the eval centre crop, squares."""

import numpy as np
import pytest
import tensorflow as tf

from simclr_jax.augment import tf_image

WINDOWS = [((0, 0), (47, 61)), ((5, 7), (20, 30)), ((13, 3), (33, 40)), ((1, 1), (9, 9))]


@pytest.mark.parametrize("subsampling", [0, 2])
@pytest.mark.parametrize("window", WINDOWS)
def test_fused_decode_and_crop_has_the_plain_crops_geometry(window, subsampling, jpeg, noisy):
    data = jpeg(noisy(0, (61, 47)), subsampling)
    (top, left), (h, w) = window
    fused = tf_image.decode_window(
        data, lambda shape: (tf.constant([top, left]), tf.constant([h, w]))).numpy()
    plain = tf_image.decode(data).numpy()[top:top + h, left:left + w]
    assert fused.shape == plain.shape == (h, w, 3)
    # Identical pixels, except where the window's edge splits a pair of subsampled chroma
    # samples: the decoder's chroma upsampling then lacks the neighbour outside the window.
    np.testing.assert_array_equal(fused[:, 1:-1], plain[:, 1:-1])
    assert np.abs(fused.astype(int) - plain).mean() < 2


def test_canvas_keeps_the_aspect_and_pads(jpeg, noisy):
    image = noisy(3, (90, 40))  # 40 x 90 (h x w)
    canvas, valid = tf_image.to_canvas(jpeg(image, 0), 30)
    assert canvas.shape == (30, 30, 3) and valid.numpy().tolist() == [13, 30]
    assert not canvas.numpy()[13:].any()


def test_center_crop_resize_fused_and_cifar_rules(jpeg, noisy, smooth_image):
    image = noisy(4, (80, 60))
    data = jpeg(image, 0)
    fused = tf_image.center_crop_resize(data, 48).numpy()
    plain = tf_image.center_crop_resize(tf_image.decode(data), 48).numpy()
    np.testing.assert_array_equal(fused, plain)
    small = smooth_image(5, (32, 32))
    np.testing.assert_array_equal(tf_image.center_crop_resize(small, 32).numpy(), small)


@pytest.mark.parametrize("transpose", [False, True])
def test_square_keeps_the_aspect_and_takes_the_centre(transpose):
    """40 x 80: the shorter side becomes 16, so the square is the middle half of the width
    (green here); red and blue bands outside it must not show. Also for the tall image."""
    image = np.zeros((40, 80, 3), np.uint8)
    image[:, :20, 0] = image[:, 60:, 2] = image[:, 20:60, 1] = 255
    if transpose:
        image = image.transpose(1, 0, 2)
    out = tf_image.square(tf.constant(image), 16).numpy()
    assert out.shape == (16, 16, 3)
    inner = out[2:-2, 2:-2].astype(int)
    assert (inner[..., 1] >= 250).all() and (inner[..., [0, 2]] <= 5).all()
