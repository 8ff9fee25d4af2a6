"""TFDS splits too large for host memory (ImageNet), read from their TFRecord files as a stream.

Each process reads its own shard (`tfds.split_for_jax_process`, so every example is seen once
per epoch across processes) and forms its rows of each global batch from consecutive elements
of its stream, epochs back to back. The order within an epoch is a pure function of
(seed, epoch, process): the shard's files are permuted and dealt to up to 16 lanes, the lanes
are read round-robin (a deterministic parallel interleave) and each window of W consecutive
records is permuted with a stateless shuffle.

Resuming at step s needs no replay: the process has consumed s * local_batch elements, hence
epoch e and k elements of it; the round-robin arithmetic gives how far each lane got at the
start of k's window, so reading restarts there (whole files skipped, at most one partial file
per lane re-read) and fewer than W records are dropped after the window's shuffle.
"""

import dataclasses
from collections.abc import Iterator

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from simclr_jax.errors import UserError

MAX_LANES = 16  # TFDS's default interleave cycle length


@dataclasses.dataclass(frozen=True)
class TfdsStream:
    """This process's shard of a TFDS split: its TFRecord file slices, in split order."""

    files: tuple[tuple[str, int, int], ...]  # (filename, skip, take)
    num_examples: int  # in this shard
    offset: int  # index of the shard's first example in the whole split
    features: tfds.features.FeaturesDict
    image_key: str
    label_key: str | None

    def parse(self, serialized: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """A serialized record -> (encoded image bytes, int32 label; 0 when unlabelled)."""
        example = self.features.deserialize_example(
            serialized, decoders={self.image_key: tfds.decode.SkipDecoding()})
        label = (tf.cast(example[self.label_key], tf.int32) if self.label_key
                 else tf.constant(0, tf.int32))
        return example[self.image_key], label


def open_stream(builder: tfds.core.DatasetBuilder, split: str, image_key: str,
                label_key: str | None, process_index: int, process_count: int,
                drop_remainder: bool) -> TfdsStream:
    """The shard of `split` for this process (equal shards when drop_remainder)."""
    if builder.info.file_format != tfds.core.FileFormat.TFRECORD:
        raise UserError(f"dataset {builder.name!r} is stored as {builder.info.file_format.value};"
                        f" the streaming reader needs TFRecord files (re-prepare it with "
                        f"`tfds build --file_format=tfrecord`)")

    def shard(p: int):
        return builder.info.splits[tfds.split_for_jax_process(
            split, process_index=p, process_count=process_count, drop_remainder=drop_remainder)]

    info = shard(process_index)
    offset = sum(shard(p).num_examples for p in range(process_index))
    files = tuple((fi.filename, fi.skip, fi.take) for fi in info.file_instructions
                  if fi.take > 0)
    return TfdsStream(files=files, num_examples=info.num_examples, offset=offset,
                      features=builder.info.features, image_key=image_key, label_key=label_key)


def _lanes(stream: TfdsStream, seed: int, epoch: int, process_index: int
           ) -> list[list[tuple[str, int, int]]]:
    """The epoch's files, permuted and dealt round-robin to the lanes."""
    order = np.random.default_rng([seed, epoch, process_index, 0x57EA]).permutation(
        len(stream.files))
    n = min(MAX_LANES, len(order))
    return [[stream.files[i] for i in order[lane::n]] for lane in range(n)]


def consumed_per_lane(lengths: list[int], m: int) -> tuple[list[int], int]:
    """After m elements of a round-robin over lanes of these lengths (exhausted lanes drop
    out): elements taken from each lane, and the lane that emits next."""
    lengths_arr = np.array(lengths)
    lo, hi = 0, int(lengths_arr.max())  # the round m falls into: last r, sum(min(L, r)) <= m
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if np.minimum(lengths_arr, mid).sum() <= m else (lo, mid - 1)
    r = lo
    rem = m - int(np.minimum(lengths_arr, r).sum())
    active = np.flatnonzero(lengths_arr > r)
    taken = np.minimum(lengths_arr, r)
    taken[active[:rem]] += 1
    nxt = int(active[rem]) if rem < len(active) else 0
    return taken.tolist(), nxt


def _drop_front(files: list[tuple[str, int, int]], n: int) -> list[tuple[str, int, int]]:
    """The lane's file slices without its first n records (whole files dropped unread)."""
    out = []
    for name, skip, take in files:
        if n >= take:
            n -= take
            continue
        out.append((name, skip + n, take - n))
        n = 0
    return out


def _epoch_plan(stream, seed, epoch, process_index, start, window):
    """Padded lane arrays for `epoch`, resumed after `start` of its elements: (names (L, F),
    skips, takes, epoch, first window, elements to drop after that window's shuffle)."""
    lanes = _lanes(stream, seed, epoch, process_index)
    first = start // window
    taken, nxt = consumed_per_lane([sum(t for _, _, t in lane) for lane in lanes],
                                   first * window)
    lanes = [_drop_front(lane, c) for lane, c in zip(lanes, taken, strict=True)]
    lanes = [lane for lane in lanes[nxt:] + lanes[:nxt] if lane]  # next emitter first
    width = max(len(lane) for lane in lanes)
    pad = [lane + [("", 0, 0)] * (width - len(lane)) for lane in lanes]
    names = np.array([[f for f, _, _ in lane] for lane in pad], dtype=object)
    skips = np.array([[s for _, s, _ in lane] for lane in pad], np.int64)
    takes = np.array([[t for _, _, t in lane] for lane in pad], np.int64)
    return names, skips, takes, epoch, first, start - first * window


def _read_epoch(names, skips, takes, epoch, first_window, drop, seed: int, window: int,
                process_index: int) -> tf.data.Dataset:
    """Records of one epoch in the order described in the module docstring."""
    def lane(ns, ss, ts):
        files = tf.data.Dataset.from_tensor_slices((ns, ss, ts)).filter(lambda n, s, t: t > 0)
        return files.flat_map(lambda n, s, t: tf.data.TFRecordDataset(n).skip(s).take(t))

    lanes = tf.data.Dataset.from_tensor_slices((names, skips, takes))
    records = lanes.interleave(lane, cycle_length=MAX_LANES, block_length=1,
                               num_parallel_calls=MAX_LANES, deterministic=True)
    epoch_seed = tf.stack([tf.constant(seed, tf.int64), epoch * 65_537 + process_index])

    def shuffle_window(w, batch):
        seed_w = tf.random.experimental.stateless_fold_in(epoch_seed, w)
        return tf.data.Dataset.from_tensor_slices(
            tf.random.experimental.stateless_shuffle(batch, seed_w))

    records = records.batch(window).enumerate(start=first_window).flat_map(shuffle_window)
    return records.skip(drop)


def train_records(stream: TfdsStream, seed: int, process_index: int, start: int,
                  window: int) -> tf.data.Dataset:
    """Endless serialized records of this process's stream from its element `start`."""
    n = stream.num_examples

    def plans() -> Iterator:
        epoch, k = divmod(start, n)
        while True:
            yield _epoch_plan(stream, seed, epoch, process_index, k, window)
            epoch, k = epoch + 1, 0

    spec = (tf.TensorSpec((None, None), tf.string), tf.TensorSpec((None, None), tf.int64),
            tf.TensorSpec((None, None), tf.int64), tf.TensorSpec((), tf.int64),
            tf.TensorSpec((), tf.int64), tf.TensorSpec((), tf.int64))
    epochs = tf.data.Dataset.from_generator(plans, output_signature=spec)
    return epochs.flat_map(lambda *plan: _read_epoch(*plan, seed=seed, window=window,
                                                     process_index=process_index))


def eval_records(stream: TfdsStream) -> tf.data.Dataset:
    """The shard's records once, in split order."""
    names, skips, takes = zip(*stream.files, strict=True)
    files = tf.data.Dataset.from_tensor_slices(
        (list(names), np.array(skips, np.int64), np.array(takes, np.int64)))
    return files.flat_map(lambda n, s, t: tf.data.TFRecordDataset(n).skip(s).take(t))
