"""Evaluation input for any Source (in memory, image files, streamed TFRecords): every example
of the split exactly once over all processes, the last global batch padded and masked.

Random-access sources use eval_pipeline.eval_positions (global batch g holds examples
g*B .. g*B+B-1; process p its block of B/P rows). Streamed sources read their process's shard
(split_for_jax_process without dropping: shard sizes differ by at most one) and pad it to the
same number of batches, ceil(N / B), on every process, which the collectives of an eval step
need. Preprocessing is the official centre crop (host_augment.center_crop_resize), fused with
the JPEG decode for encoded images.
"""

import numpy as np
import tensorflow as tf

from simclr_jax.data import eval_pipeline, host_augment, pipeline, streaming
from simclr_jax.data.sources import Source


def num_batches(num_examples: int, global_batch: int) -> int:
    """Global batches of one exact pass: the same on every process."""
    return -(-num_examples // global_batch)


def eval_dataset(source: Source, *, image_size: int, global_batch: int, process_index: int = 0,
                 process_count: int = 1) -> tf.data.Dataset:
    """One pass: {'image' uint8 (b, S, S, 3), 'label' int32, 'mask' bool, 'index' int64 (the
    example's index in the split, -1 on padding)} per batch of this process's rows."""
    local = global_batch // process_count
    steps = num_batches(len(source), global_batch)
    read = pipeline.load(source)

    def example(x, label, mask, index):
        image, label = read(x, label)
        image = host_augment.center_crop_resize(image, image_size)
        return {"image": image, "label": label, "mask": mask, "index": index}

    if source.stream is None:
        idx, mask = eval_pipeline.eval_positions(len(source), global_batch, process_index,
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
