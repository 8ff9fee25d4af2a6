"""Host side of the pretraining input: per example either two cropped+flipped uint8 views
(default; with augment_on='host' their colour recipe then runs on the host CPU per batch:
augment/views.py HostColor), or one decoded canvas that the device crops twice
(crop_on='device').

Training is a pure function of (config, seed, step): every random choice is a stateless op
seeded by the example's position in the global stream (step * batch_size + row). Random-access
sources (in-memory arrays, image files) follow a seeded permutation per epoch, and every process
reads only its rows of each global batch, so resuming at step s yields exactly the batches an
uninterrupted run would have seen, on any number of processes. Streamed TFDS splits give each
process its own shard (data/streaming.py) and resume from the step number as well.
"""

import functools
from collections.abc import Iterator

import ml_collections
import numpy as np
import tensorflow as tf

from simclr_jax.augment import crop, recipes, tf_image, views
from simclr_jax.data import folders, streaming
from simclr_jax.data.sources import Source
from simclr_jax.data.splits import ArraySplit
from simclr_jax.errors import UserError

SEED_SALT = 0x5C1C


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
        idx = np.empty(local, np.int64)
        for e in np.unique(epoch):  # a batch spans at most a few epochs
            rows = epoch == e
            idx[rows] = epoch_permutation(seed, int(e), size)[offset[rows]]
        yield idx, pos
        step += 1


def canvas_size(config: ml_collections.ConfigDict) -> int:
    """Side of the canvas the host decodes into for crop_on='device' (config 0 = auto: the
    image size up to 32 px, else image_size / 0.875, e.g. 256 for 224)."""
    if config.crop_canvas_size > 0:
        return config.crop_canvas_size
    size = config.image_size
    if size <= tf_image.EVAL_NO_CROP_MAX_SIZE:
        return size
    return int(round(size / tf_image.EVAL_CROP_FRACTION))


def whole_image(image: tf.Tensor, size: int) -> tf.Tensor:
    """The whole image resized to size x size (bicubic): what the host sends when custom view
    ops (augmentation ablations) do all the augmenting, including any crop and flip."""
    return tf_image.resize(tf_image.decode_window(
        image, lambda shape: (tf.zeros([2], tf.int32), shape)), size)


def host_views(config: ml_collections.ConfigDict):
    """The per-example host work for `config`: fn(image, position) -> dict of views.

    `image` is decoded uint8 or encoded bytes; `position` the example's global stream position,
    which seeds every draw (view v: fold(fold((seed, salt), position), v); crop 0, flip 1
    below that).
    """
    crop_on = config.crop_on
    canvas = canvas_size(config)
    custom_ops = not recipes.Augmentation.from_config(config).uses_default

    def views(image: tf.Tensor, position: tf.Tensor) -> dict[str, tf.Tensor]:
        if crop_on == "device":  # both views are cropped on the accelerator
            out = dict(zip(("image", "image_valid"), tf_image.to_canvas(image, canvas),
                           strict=True))
            out["image"].set_shape([canvas, canvas, 3])
            return out
        if custom_ops:  # the device does everything ('crop' and 'flip' are ops there)
            view = whole_image(image, config.image_size)
            return {"view1": view, "view2": view}
        base = tf_image.fold(tf.constant([config.seed, SEED_SALT], tf.int64), position)
        out = {}
        for v in (1, 2):
            seed = tf_image.fold(base, v)
            out[f"view{v}"] = crop.crop_and_flip(image, seed, config.image_size,
                                                 config.crop_area_min)
        return out

    return views


def stream_window(local_batch: int) -> int:
    """Records permuted together in a streamed epoch: 10 local batches (the official code's
    shuffle buffer), at least 1024, at most 10,000 (encoded ImageNet: ~1 GB)."""
    return min(max(10 * local_batch, 1024), 10_000)


def _as_source(split: ArraySplit | Source) -> Source:
    if isinstance(split, Source):
        return split
    return Source(name="array", num_examples=len(split), num_classes=split.num_classes,
                  images=split.images, labels=split.labels)


def examples(source: Source, *, seed: int, global_batch: int, start_step: int,
             process_index: int, process_count: int) -> tf.data.Dataset:
    """This process's examples of each global batch from start_step, in order, as
    (image: decoded uint8 or encoded bytes, label int32, global position int64), unparallel
    and unparsed: `load` turns each element into (image, label) in the parallel map."""
    local = global_batch // process_count
    if source.stream is not None:
        start = start_step * local
        records = streaming.train_records(source.stream, seed, process_index, start,
                                          stream_window(local))

        def position(j, record):
            pos = (j // local) * global_batch + process_index * local + j % local
            return record, tf.constant(0, tf.int32), pos

        return records.enumerate(start=start).map(position)

    def batches() -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        for idx, pos in stream_indices(seed, len(source), global_batch, start_step,
                                       process_index, process_count):
            yield (*source.fetch(idx), pos)

    data = (tf.TensorSpec((local, *source.images.shape[1:]), tf.uint8)
            if source.images is not None else tf.TensorSpec((local,), tf.string))
    spec = (data, tf.TensorSpec((local,), tf.int32), tf.TensorSpec((local,), tf.int64))
    return tf.data.Dataset.from_generator(batches, output_signature=spec).unbatch()


def load(source: Source):
    """fn(element of `examples`) -> (image decoded or encoded, label), run in the parallel map."""
    if source.stream is not None:
        return lambda record, label: source.stream.parse(record)
    if source.files is not None:
        return lambda path, label: (tf.io.read_file(path), label)
    return lambda image, label: (image, label)  # decoded arrays or encoded bytes in memory


def pretrain_dataset(source: Source | ArraySplit, config: ml_collections.ConfigDict, *,
                     start_step: int = 0, process_index: int = 0, process_count: int = 1
                     ) -> tf.data.Dataset:
    """Endless tf.data stream of this process's share of each global batch, from start_step.

    Elements: 'label' int32 (b,), 'position' int64 (b,) and either 'view1', 'view2' uint8
    (b, S, S, 3) or, with crop_on='device', 'image' uint8 (b, C, C, 3) + 'image_valid' (b, 2).
    """
    source = _as_source(source)
    local = config.batch_size // process_count
    read, views = load(source), host_views(config)

    def example(x, label, pos):
        image, label = read(x, label)
        return {**views(image, pos), "label": label, "position": pos}

    ds = examples(source, seed=config.seed, global_batch=config.batch_size,
                  start_step=start_step, process_index=process_index,
                  process_count=process_count)
    ds = ds.map(example, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(local, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.deterministic = True  # parallel map must not reorder: resume depends on order
    return ds.with_options(options)


def read_failure(source: Source, seed: int, global_batch: int, step: int, process_index: int,
                 process_count: int, error: tf.errors.OpError) -> UserError:
    """The error to report when reading the batch of `step` (of the stream of `examples`)
    failed: names the bad file."""
    message = error.message.strip().splitlines()[-1] if error.message else type(error).__name__
    if source.files is not None:
        idx, _ = next(stream_indices(seed, len(source), global_batch, step, process_index,
                                     process_count))
        found = folders.first_unreadable(source.files[idx])
        if found:
            return UserError(
                f"cannot read image file {found[0]} ({found[1]}): remove or replace it, or set "
                f"config.skip_corrupt_images=True to skip unreadable files")
    return UserError(f"reading {source.name} failed at step {step}: {message}")


def pretrain_batches(source: Source, config: ml_collections.ConfigDict, *, start_step: int = 0,
                     process_index: int = 0, process_count: int = 1,
                     ) -> Iterator[dict[str, np.ndarray]]:
    """pretrain_dataset as numpy batches (augment_on='host': colour-augmented on the host CPU);
    an unreadable input becomes a UserError naming it."""
    ds = pretrain_dataset(source, config, start_step=start_step, process_index=process_index,
                          process_count=process_count)
    aug = recipes.Augmentation.from_config(config)
    place = (views.HostColor(aug, config.batch_size) if aug.augment_on == "host"
             else lambda batch: batch)
    it, step = ds.as_numpy_iterator(), start_step
    while True:
        try:
            batch = next(it)
        except StopIteration:
            return
        except tf.errors.OpError as e:  # deterministic order: the failure is in this batch
            raise read_failure(source, config.seed, config.batch_size, step, process_index,
                               process_count, e) from None
        yield place(batch)
        step += 1
