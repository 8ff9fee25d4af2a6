"""Host-side input of the evaluation jobs: supervised training batches and exact eval passes,
streamed from any Source (data/sources.py): TFDS splits in memory or as TFRecords, image files.

No split is materialised: training reads the examples of each global batch as pretraining does
(`pretrain_input.examples`: a seeded permutation per epoch for random-access sources, the
process's TFRecord shard for streamed ones), so it is deterministic and resumes from the step
number. Training preprocessing is the official one for fine-tuning and linear evaluation: the
random resized crop of the full-resolution image (augment/crop.py, the pretraining crop; for
JPEGs only the window is decoded) + flip, resized to image_size, keyed by the example's position
in the global stream; or the eval preprocessing (train_augment=False). Evaluation: the official
centre crop (87.5% of the shorter side, then bicubic resize; the whole image at 32 px or less,
CIFAR), fused with the JPEG decode for encoded images (tf_image.center_crop_resize). A split is
read exactly once, the last global batch padded and masked, so metrics summed over `mask` are
exact on any number of devices and processes.

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
from simclr_jax.data import folders, pretrain_input, streaming
from simclr_jax.data.sources import Source
from simclr_jax.errors import UserError

TRAIN_SEED_SALT = 0xE7A1  # crops of supervised training: another stream than pretraining's


def train_dataset(source: Source, *, seed: int, global_batch: int, image_size: int,
                  crop_area_min: float, augment: bool = True, start_step: int = 0,
                  process_index: int = 0, process_count: int = 1) -> tf.data.Dataset:
    """Endless stream of this process's rows of each global batch from `start_step`:
    {'image' uint8 (b, S, S, 3), 'label' int32, 'position' int64 (in the global stream)}.

    The order is that of pretrain_input.examples (for random-access sources the seeded
    permutation per epoch of pretrain_input.stream_indices), so a job that trains on cached
    features with the same seed sees the same examples in the same order.
    """
    local = global_batch // process_count
    read = pretrain_input.load(source)
    base = tf.constant([seed, TRAIN_SEED_SALT], tf.int64)

    def example(x, label, pos):
        image, label = read(x, label)
        if augment:
            image = crop.crop_and_flip(image, tf_image.fold(base, pos), image_size,
                                       crop_area_min)
        else:
            image = tf_image.center_crop_resize(image, image_size)
        return {"image": image, "label": label, "position": pos}

    ds = pretrain_input.examples(source, seed=seed, global_batch=global_batch,
                                 start_step=start_step, process_index=process_index,
                                 process_count=process_count)
    ds = ds.map(example, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(local, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.deterministic = True  # resuming depends on the order
    return ds.with_options(options)


def train_batches(source: Source, *, seed: int, global_batch: int, start_step: int = 0,
                  process_index: int = 0, process_count: int = 1, **kwargs
                  ) -> Iterator[dict[str, np.ndarray]]:
    """train_dataset as numpy batches; an unreadable image becomes a UserError naming it."""
    ds = train_dataset(source, seed=seed, global_batch=global_batch, start_step=start_step,
                       process_index=process_index, process_count=process_count, **kwargs)
    it, step = ds.as_numpy_iterator(), start_step
    while True:
        try:
            batch = next(it)
        except StopIteration:
            return
        except tf.errors.OpError as e:  # deterministic order: the failure is in this batch
            raise pretrain_input.read_failure(source, seed, global_batch, step, process_index,
                                              process_count, e) from None
        yield batch
        step += 1


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


def num_batches(num_examples: int, global_batch: int) -> int:
    """Global batches of one exact pass: the same on every process."""
    return -(-num_examples // global_batch)


def eval_dataset(source: Source, *, image_size: int, global_batch: int, process_index: int = 0,
                 process_count: int = 1,
                 crop_fraction: float = tf_image.EVAL_CROP_FRACTION) -> tf.data.Dataset:
    """One pass: {'image' uint8 (b, S, S, 3), 'label' int32, 'mask' bool, 'index' int64 (the
    example's index in the split, -1 on padding)} per batch of this process's rows."""
    local = global_batch // process_count
    steps = num_batches(len(source), global_batch)
    read = pretrain_input.load(source)

    def example(x, label, mask, index):
        image, label = read(x, label)
        image = tf_image.center_crop_resize(image, image_size, crop_fraction)
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


def eval_batches(source: Source, *, image_size: int, global_batch: int, process_index: int = 0,
                 process_count: int = 1, crop_fraction: float = tf_image.EVAL_CROP_FRACTION
                 ) -> Iterator[dict[str, np.ndarray]]:
    """eval_dataset as numpy batches; an unreadable image becomes a UserError naming it.
    `crop_fraction`: the centre square's side over the shorter side (1: the paper's transfer
    features, the shorter side resized to image_size and centre-cropped)."""
    ds = eval_dataset(source, image_size=image_size, global_batch=global_batch,
                      process_index=process_index, process_count=process_count,
                      crop_fraction=crop_fraction)
    it, b = ds.as_numpy_iterator(), 0
    while True:
        try:
            batch = next(it)
        except StopIteration:
            return
        except tf.errors.OpError as e:
            raise _eval_failure(source, b, global_batch, process_index, process_count,
                                e) from None
        yield batch
        b += 1


def _eval_failure(source: Source, b: int, global_batch: int, process_index: int,
                  process_count: int, error: tf.errors.OpError) -> UserError:
    """The error for a failed eval batch `b`: names the unreadable file when it is one."""
    message = error.message.strip().splitlines()[-1] if error.message else type(error).__name__
    if source.files is not None:
        idx, mask = eval_positions(len(source), global_batch, process_index, process_count)
        found = folders.first_unreadable(source.files[idx[b][mask[b]]])
        if found:
            return UserError(
                f"cannot read image file {found[0]} ({found[1]}): evaluation reads every image "
                f"of {source.name}; remove or replace it, or set "
                f"config.skip_corrupt_images=True to skip unreadable files")
    return UserError(f"reading {source.name} failed in evaluation batch {b}: {message}")
