"""The transfer features' preprocessing (linear_crop_fraction=1, the paper's): the centred
square of the whole shorter side, bicubic-resized to the input size; the eval jobs' 0.875
crop is another image."""

import numpy as np
import tensorflow as tf

from simclr_jax.data import eval_input
from simclr_jax.data.sources import Source


def test_crop_fraction_one_is_the_centre_square_of_the_shorter_side(smooth_image):
    images = np.stack([smooth_image(s, (80, 60)) for s in range(4)])  # (4, 60, 80, 3)
    source = Source(name="t", num_examples=4, num_classes=2, images=images,
                    labels=np.array([0, 1, 0, 1], np.int32))
    (batch,) = list(eval_input.eval_batches(source, image_size=40, global_batch=4,
                                            crop_fraction=1.0))
    square = images[:, :, 10:70]  # width 80 -> the centred 60 columns
    ref = tf.image.resize(square.astype(np.float32), (40, 40), method="bicubic")
    ref = np.clip(np.round(ref.numpy()), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(batch["image"], ref)
    (default,) = list(eval_input.eval_batches(source, image_size=40, global_batch=4))
    assert np.abs(default["image"].astype(int) - ref.astype(int)).mean() > 1
