"""Host-side input of the evaluation jobs: supervised training batches and exact eval passes.

Training: random resized crop + flip (augment/crop.py, the pretraining crop) or the eval
preprocessing, in a seeded order per epoch with stateless crops keyed by the example's position
in the global stream, as in pretraining. Evaluation: the official centre crop (87.5% of the
shorter side, then bicubic resize; the whole image at 32 px or less, CIFAR), fused with the JPEG
decode for encoded images (tf_image.center_crop_resize). A split is read exactly once, the last
global batch padded and masked, so metrics summed over `mask` are exact on any number of devices
and processes.

Random-access sources use `eval_positions` (global batch g holds examples g*B .. g*B+B-1;
process p its block of B/P rows). Streamed sources read their process's shard
(split_for_jax_process without dropping: shard sizes differ by at most one) and pad it to the
same number of batches, ceil(N / B), on every process, which the collectives of an eval step
need.
"""

from collections.abc import Iterator

import numpy as np
import tensorflow as tf

from simclr_jax.augment import crop, tf_image
from simclr_jax.data import pretrain_input, streaming
from simclr_jax.data.sources import Source
from simclr_jax.data.splits import ArraySplit

TRAIN_SEED_SALT = 0xE7A1  # crops of supervised training: another stream than pretraining's


def _labels(split: ArraySplit) -> np.ndarray:
    return split.labels if split.labels is not None else np.zeros(len(split), np.int32)


def train_dataset(split: ArraySplit, *, seed: int, global_batch: int, image_size: int,
                  crop_area_min: float, augment: bool = True, start_step: int = 0,
                  process_index: int = 0, process_count: int = 1) -> tf.data.Dataset:
    """Endless stream of this process's rows of each global batch: {'image', 'label'}.

    The example order is pretrain_input.stream_indices (seeded permutation per epoch), so a job that
    trains on cached features with the same seed sees the same examples in the same order.
    """
    local = global_batch // process_count
    images, labels = tf.constant(split.images), tf.constant(_labels(split))
    indices = tf.data.Dataset.from_generator(
        lambda: pretrain_input.stream_indices(seed, len(split), global_batch, start_step,
                                              process_index, process_count),
        output_signature=(tf.TensorSpec((local,), tf.int64), tf.TensorSpec((local,), tf.int64)))

    def example(idx, pos):
        image = tf.gather(images, idx)
        if augment:
            key = tf.random.experimental.stateless_fold_in(
                tf.constant([seed, TRAIN_SEED_SALT], tf.int64), pos)
            image = crop.crop_and_flip(image, key, image_size, crop_area_min)
        else:
            image = tf_image.center_crop_resize(image, image_size)
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
    ds = ds.map(lambda i, m: {"image": tf_image.center_crop_resize(tf.gather(images, i),
                                                                   image_size),
                              "label": tf.gather(labels, i), "mask": m},
                num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(local).prefetch(tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.deterministic = True
    return ds.with_options(options).as_numpy_iterator()



def num_batches(num_examples: int, global_batch: int) -> int:
    """Global batches of one exact pass: the same on every process."""
    return -(-num_examples // global_batch)


def eval_dataset(source: Source, *, image_size: int, global_batch: int, process_index: int = 0,
                 process_count: int = 1) -> tf.data.Dataset:
    """One pass: {'image' uint8 (b, S, S, 3), 'label' int32, 'mask' bool, 'index' int64 (the
    example's index in the split, -1 on padding)} per batch of this process's rows."""
    local = global_batch // process_count
    steps = num_batches(len(source), global_batch)
    read = pretrain_input.load(source)

    def example(x, label, mask, index):
        image, label = read(x, label)
        image = tf_image.center_crop_resize(image, image_size)
        return {"image": image, "label": label, "mask": mask, "index": index}

    if source.stream is None:
        idx, mask = eval_positions(len(source), global_batch, process_index,
                                   process_count)
        index = np.where(mask, idx, -1).astype(np.int64)

        def rows():  # batch by batch: no copy of the split inside the tf.data graph
            for b in range(steps):
                yield (*source.fetch(idx[b]), mask[b], index[b])

        data = (tf.TensorSpec((local, *source.images.shape[1:]), tf.uint8)
                if source.images is not None else tf.TensorSpec((local,), tf.string))
        spec = (data, tf.TensorSpec((local,), tf.int32), tf.TensorSpec((local,), tf.bool),
                tf.TensorSpec((local,), tf.int64))
        ds = tf.data.Dataset.from_generator(rows, output_signature=spec).unbatch()
        ds = ds.map(example, num_parallel_calls=tf.data.AUTOTUNE)
    else:
        stream = source.stream
        records = streaming.eval_records(stream).enumerate(start=stream.offset)
        ds = records.map(lambda i, r: example(r, tf.constant(0, tf.int32), True, i),
                         num_parallel_calls=tf.data.AUTOTUNE)
        pad = {"image": tf.zeros([image_size, image_size, 3], tf.uint8),
               "label": tf.constant(0, tf.int32), "mask": tf.constant(False),
               "index": tf.constant(-1, tf.int64)}
        padding = steps * local - stream.num_examples
        ds = ds.concatenate(tf.data.Dataset.from_tensors(pad).repeat(padding))
    options = tf.data.Options()
    options.deterministic = True
    return ds.batch(local, drop_remainder=True).prefetch(tf.data.AUTOTUNE).with_options(options)
