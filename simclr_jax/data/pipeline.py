"""Host side of the pretraining input: two cropped+flipped uint8 views per image.

Training is a pure function of (config, seed, step): the example order is a seeded permutation
per epoch, and every crop and flip is drawn with stateless ops seeded by the example's position
in the global stream (step * batch_size + row). Resuming at step s therefore yields exactly the
batches an uninterrupted run would have seen, on any number of processes.
"""

import functools
from collections.abc import Iterator

import numpy as np
import tensorflow as tf

from simclr_jax.data.datasets import ArraySplit


@functools.lru_cache(maxsize=4)
def epoch_permutation(seed: int, epoch: int, size: int) -> np.ndarray:
    """Order of the examples in `epoch`; a pure function of (seed, epoch)."""
    return np.random.default_rng([seed, epoch]).permutation(size)


def stream_indices(seed: int, size: int, global_batch: int, start_step: int, process_index: int,
                   process_count: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """For each step from start_step: (dataset indices, global stream positions) of this
    process's rows of the global batch. Epochs run back to back in the stream."""
    local = global_batch // process_count
    step = start_step
    while True:
        pos = step * global_batch + process_index * local + np.arange(local, dtype=np.int64)
        epoch, offset = np.divmod(pos, size)
        idx = np.array([epoch_permutation(seed, int(e), size)[o]
                        for e, o in zip(epoch, offset, strict=True)])
        yield idx.astype(np.int64), pos
        step += 1


def random_resized_crop(image: tf.Tensor, seed: tf.Tensor, size: int, area_min: float,
                        method: str = "bicubic") -> tf.Tensor:
    """Inception-style crop (area in (area_min, 1), aspect 3/4..4/3), resized to size x size."""
    begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image), bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seed=seed,
        min_object_covered=0.1, aspect_ratio_range=(3 / 4, 4 / 3),
        area_range=(area_min, 1.0), max_attempts=100, use_image_if_no_bounding_boxes=True)
    crop = tf.slice(image, begin, crop_size)
    crop = tf.image.resize(tf.cast(crop, tf.float32), (size, size), method=method)
    return tf.cast(tf.clip_by_value(tf.round(crop), 0.0, 255.0), tf.uint8)


def make_view(image: tf.Tensor, seed: tf.Tensor, size: int, area_min: float) -> tf.Tensor:
    """Crop + flip of one view; `seed` is a stateless seed pair."""
    crop_seed = tf.random.experimental.stateless_fold_in(seed, 0)
    flip_seed = tf.random.experimental.stateless_fold_in(seed, 1)
    view = random_resized_crop(image, crop_seed, size, area_min)
    return tf.image.stateless_random_flip_left_right(view, flip_seed)


def pretrain_dataset(split: ArraySplit, *, seed: int, global_batch: int, image_size: int,
                     crop_area_min: float, start_step: int = 0, process_index: int = 0,
                     process_count: int = 1) -> tf.data.Dataset:
    """Endless tf.data stream of this process's share of each global batch, from start_step.

    Elements: {'view1', 'view2': uint8 (b, S, S, 3), 'label': int32 (b,), 'position': int64}.
    """
    local = global_batch // process_count
    images = tf.constant(split.images)
    labels = tf.constant(split.labels if split.labels is not None
                         else np.zeros(len(split), np.int32))
    indices = tf.data.Dataset.from_generator(
        lambda: stream_indices(seed, len(split), global_batch, start_step, process_index,
                               process_count),
        output_signature=(tf.TensorSpec((local,), tf.int64), tf.TensorSpec((local,), tf.int64)))

    def example(idx, pos):
        base = tf.random.experimental.stateless_fold_in(
            tf.constant([seed, 0x5C1C], tf.int64), pos)
        image = tf.gather(images, idx)
        return {
            "view1": make_view(image, tf.random.experimental.stateless_fold_in(base, 1),
                               image_size, crop_area_min),
            "view2": make_view(image, tf.random.experimental.stateless_fold_in(base, 2),
                               image_size, crop_area_min),
            "label": tf.gather(labels, idx),
            "position": pos,
        }

    ds = indices.unbatch().map(example, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(local, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.deterministic = True  # parallel map must not reorder: resume depends on order
    return ds.with_options(options)
