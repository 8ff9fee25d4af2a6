"""Host-side input of the evaluation jobs: supervised training batches and exact eval passes.

Training: random resized crop + flip (or the eval preprocessing), a seeded order per epoch and
stateless crops keyed by the example's position in the global stream, as in pretraining.
Evaluation: centre crop (87.5%) then resize, skipped at 32 px or less (CIFAR), as in the official
code; a split is read exactly once, the last global batch padded and masked, so metrics summed
over `mask` are exact on any number of devices and processes.
"""

from collections.abc import Iterator

import numpy as np
import tensorflow as tf

from simclr_jax.data import pipeline
from simclr_jax.data.datasets import ArraySplit

CROP_PROPORTION = 0.875


def center_crop_box(height: int, width: int, proportion: float = CROP_PROPORTION
                    ) -> tuple[int, int, int]:
    """(top, left, side) of the centred square crop of side proportion * min(height, width)."""
    side = max(1, int(round(proportion * min(height, width))))
    return (height - side + 1) // 2, (width - side + 1) // 2, side


def preprocess_eval(image: tf.Tensor, size: int) -> tf.Tensor:
    """uint8 (H, W, 3) -> uint8 (size, size, 3): centre crop + bicubic resize (no crop <= 32 px)."""
    if size > 32:
        shape = tf.shape(image)
        side = tf.cast(tf.round(CROP_PROPORTION * tf.cast(tf.minimum(shape[0], shape[1]),
                                                          tf.float32)), tf.int32)
        side = tf.maximum(side, 1)
        top, left = (shape[0] - side + 1) // 2, (shape[1] - side + 1) // 2
        image = tf.slice(image, [top, left, 0], [side, side, 3])
    if image.shape[0] == size and image.shape[1] == size:
        return image  # already the right size: no resampling (CIFAR at 32 px)
    resized = tf.image.resize(tf.cast(image, tf.float32), (size, size), method="bicubic")
    return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)


def _labels(split: ArraySplit) -> np.ndarray:
    return split.labels if split.labels is not None else np.zeros(len(split), np.int32)


def train_dataset(split: ArraySplit, *, seed: int, global_batch: int, image_size: int,
                  crop_area_min: float, augment: bool = True, start_step: int = 0,
                  process_index: int = 0, process_count: int = 1) -> tf.data.Dataset:
    """Endless stream of this process's rows of each global batch: {'image', 'label'}.

    The example order is pipeline.stream_indices (seeded permutation per epoch), so a job that
    trains on cached features with the same seed sees the same examples in the same order.
    """
    local = global_batch // process_count
    images, labels = tf.constant(split.images), tf.constant(_labels(split))
    indices = tf.data.Dataset.from_generator(
        lambda: pipeline.stream_indices(seed, len(split), global_batch, start_step,
                                        process_index, process_count),
        output_signature=(tf.TensorSpec((local,), tf.int64), tf.TensorSpec((local,), tf.int64)))

    def example(idx, pos):
        image = tf.gather(images, idx)
        if augment:
            key = tf.random.experimental.stateless_fold_in(
                tf.constant([seed, 0xE7A1], tf.int64), pos)
            image = pipeline.make_view(image, key, image_size, crop_area_min)
        else:
            image = preprocess_eval(image, image_size)
        return {"image": image, "label": tf.gather(labels, idx)}

    ds = indices.unbatch().map(example, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(local, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.deterministic = True
    return ds.with_options(options)


def eval_positions(num_examples: int, global_batch: int, process_index: int = 0,
                   process_count: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(indices, mask), each (num_batches, local): this process's rows of every global batch.

    Global batch b holds examples b*B .. b*B+B-1; process p holds its contiguous block of B/P
    rows. Rows past the end of the split are padding (index 0, mask False).
    """
    local = global_batch // process_count
    num_batches = -(-num_examples // global_batch)
    pos = (np.arange(num_batches)[:, None] * global_batch + process_index * local
           + np.arange(local)[None, :])
    mask = pos < num_examples
    return np.where(mask, pos, 0), mask


def eval_batches(split: ArraySplit, *, global_batch: int, image_size: int,
                 process_index: int = 0, process_count: int = 1
                 ) -> Iterator[dict[str, np.ndarray]]:
    """One pass over `split`: {'image' uint8, 'label' int32, 'mask' bool} per global batch."""
    idx, mask = eval_positions(len(split), global_batch, process_index, process_count)
    local = idx.shape[1]
    images, labels = tf.constant(split.images), tf.constant(_labels(split))
    ds = tf.data.Dataset.from_tensor_slices((idx.reshape(-1), mask.reshape(-1)))
    ds = ds.map(lambda i, m: {"image": preprocess_eval(tf.gather(images, i), image_size),
                              "label": tf.gather(labels, i), "mask": m},
                num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(local).prefetch(tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.deterministic = True
    return ds.with_options(options).as_numpy_iterator()
