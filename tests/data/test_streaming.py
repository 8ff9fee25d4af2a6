"""Streamed TFDS splits: per-process shards, each example once per epoch, exact cheap resume."""

import collections

import numpy as np
import pytest
import tensorflow_datasets as tfds

from simclr_jax.data import pretrain_input, sources, streaming

WINDOW = 64  # small, so resumes land inside, at and across window boundaries


@pytest.fixture(scope="module")
def data_dir(sharded_digits) -> str:
    return sharded_digits


def records(stream, start, count, seed=0, process_index=0):
    ds = streaming.train_records(stream, seed, process_index, start, WINDOW).take(count)
    return list(ds.as_numpy_iterator())


@pytest.mark.parametrize("split,process_index,process_count", [
    ("train", 0, 1), ("train[100:1200]", 0, 1), ("train", 1, 3)])
def test_resume_anywhere_reproduces_the_uninterrupted_stream(data_dir, split, process_index,
                                                             process_count):
    builder = tfds.builder("sklearn_digits", data_dir=data_dir)
    stream = streaming.open_stream(builder, split, "image", "label", process_index,
                                   process_count, drop_remainder=True)
    n = stream.num_examples
    full = records(stream, 0, 2 * n + 50, process_index=process_index)
    for start in (1, WINDOW - 1, WINDOW, 5 * WINDOW + 3, n - 1, n, n + WINDOW + 1, 2 * n):
        assert records(stream, start, 50, process_index=process_index) == full[start:start + 50]
    assert full[:n] != full[n:2 * n]  # a new order each epoch...
    assert sorted(full[:n]) == sorted(full[n:2 * n])  # ...of the same examples


def test_each_example_once_per_epoch_across_processes(data_dir):
    builder = tfds.builder("sklearn_digits", data_dir=data_dir)
    epochs, size = collections.Counter(), 0
    for p in range(3):
        stream = streaming.open_stream(builder, "train", "image", "label", p, 3, True)
        size += stream.num_examples
        epochs.update(records(stream, 0, stream.num_examples, process_index=p))
    whole = streaming.open_stream(builder, f"train[:{size}]", "image", "label", 0, 1, False)
    assert epochs == collections.Counter(streaming.eval_records(whole).as_numpy_iterator())
    assert size == 3 * (1497 // 3)


def test_streamed_pretraining_batches_resume_from_the_step(data_dir, tiny_config):
    config = tiny_config(data_dir=data_dir, data_mode="stream", batch_size=48)
    source = sources.open_source(config, "train")
    assert source.stream is not None and len(source) == 1497
    straight = pretrain_input.pretrain_batches(source, config)
    first = [next(straight) for _ in range(35)]  # 35 * 48 > 1497: crosses into epoch 2
    for step in (3, 31, 34):
        resumed = next(pretrain_input.pretrain_batches(source, config, start_step=step))
        for key in ("view1", "view2", "label", "position"):
            np.testing.assert_array_equal(resumed[key], first[step][key])
    positions = np.concatenate([b["position"] for b in first])
    np.testing.assert_array_equal(positions, np.arange(35 * 48))
