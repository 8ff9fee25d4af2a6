"""augment_on is a placement: 'host' runs the device's colour recipe on the host CPU, drawing
exactly the device's views (rounded to uint8), on any number of processes."""

import jax
import numpy as np
import pytest

from simclr_jax.augment import recipes, views
from simclr_jax.data import pretrain_input
from simclr_jax.data.splits import ArraySplit


def process_batch(config, split: ArraySplit, augment_on: str, process_index: int) -> dict:
    """Process `process_index` of 2's batch of step 3, with the views placed as `augment_on`."""
    config = config.copy_and_resolve_references()
    config.augment_on = augment_on
    return next(pretrain_input.pretrain_batches(split, config, start_step=3,
                                                process_index=process_index, process_count=2))


@pytest.mark.parametrize("ops", ["default", "crop,color,pblur"])
def test_host_placement_draws_the_device_views(tiny_config, smooth_image, ops):
    """Both processes' host-augmented views equal the device placement's views of the global
    batch (the train step's augment_views), rounded to uint8: the same recipe, keys and global
    example indices. At 24 px the blur kernel has radius 1, so blur is part of the test."""
    split = ArraySplit(np.stack([smooth_image(i, (32, 32)) for i in range(40)]), None, 0)
    config = tiny_config(image_size=24, blur_prob=0.5, batch_size=8, view1_ops=ops)
    device = [process_batch(config, split, "device", p) for p in (0, 1)]
    global_batch = {k: np.concatenate([b[k] for b in device]) for k in ("view1", "view2")}
    aug = recipes.Augmentation.from_config(config)
    expected = np.asarray(jax.jit(lambda b: views.augment_views(aug, 3, b))(global_batch))
    expected = np.round(expected * 255.0).astype(np.uint8)  # (2B, ...): views interleaved
    for p in (0, 1):
        host = process_batch(config, split, "host", p)
        rows = slice(2 * 4 * p, 2 * 4 * (p + 1))
        got = np.stack([host["view1"], host["view2"]], axis=1).reshape(-1, 24, 24, 3)
        assert not np.array_equal(got, np.round(np.stack(
            [device[p]["view1"], device[p]["view2"]], 1).reshape(got.shape)))  # augmented
        np.testing.assert_array_equal(got, expected[rows])


@pytest.mark.parametrize("batch,cores,chunks", [(128, 96, 64), (6, 4, 3), (7, 4, 1), (4, 8, 4)])
def test_a_host_batch_is_cut_into_equal_chunks_up_to_one_per_core(batch, cores, chunks):
    assert views.host_workers(batch, cores) == chunks
