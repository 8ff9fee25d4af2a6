"""Label-fraction subsets: stratified and seeded, the official ImageNet lists, and streamed
splits subsetted without reading them into memory."""

import numpy as np
import pytest

from simclr_jax.data import eval_input, sources, streaming, subsets
from simclr_jax.errors import UserError


def test_stratified_subset_has_the_right_size_and_class_balance():
    counts = [500, 230, 101, 64, 9]
    labels = np.repeat(np.arange(5), counts)
    for fraction in (0.01, 0.1, 0.5):
        idx = subsets.stratified_indices(labels, fraction, seed=0)
        assert len(idx) == round(fraction * len(labels))
        assert len(np.unique(idx)) == len(idx)
        got = np.bincount(labels[idx], minlength=5)
        for c, n in enumerate(counts):
            assert np.floor(fraction * n) <= got[c] <= np.ceil(fraction * n), (fraction, c)
    a, b, c = (subsets.stratified_indices(labels, 0.1, seed=s) for s in (0, 0, 1))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert len(subsets.stratified_indices(labels, 1.0, seed=0)) == len(labels)
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(UserError, match="label_fraction: must be in"):
            subsets.stratified_indices(labels, bad, seed=0)


def _config(tiny_config, label_fraction=0.1, **overrides):
    """A pretraining-style data config with the eval key label_fraction."""
    c = tiny_config(**overrides)
    c.label_fraction = label_fraction
    return c


def test_a_label_fraction_of_digits_in_memory_and_streamed(sharded_digits, tiny_config):
    memory = subsets.train_source(_config(tiny_config, data_dir=sharded_digits,
                                          data_mode="memory"), "train")
    full = sources.open_source(tiny_config(data_dir=sharded_digits, data_mode="memory"),
                               "train")
    assert len(memory) == round(0.1 * 1497) and memory.random_access
    assert set(np.bincount(memory.labels)) <= {14, 15, 16}  # ~150 per class in the split
    idx = subsets.stratified_indices(full.labels, 0.1, seed=0)
    np.testing.assert_array_equal(memory.images, full.images[idx])
    # Streamed: the stratified subset of the split in its record order (which differs from
    # the in-memory order: TFDS interleaves files there), as encoded records on every process.
    streamed = subsets.train_source(_config(tiny_config, data_dir=sharded_digits,
                                            data_mode="stream"), "train", process_index=1,
                                    process_count=2)
    assert streamed.encoded is not None and len(streamed) == len(memory)
    whole = sources.open_source(tiny_config(data_dir=sharded_digits, data_mode="stream"),
                                "train", for_eval=True).stream
    records = list(streaming.eval_records(whole).map(whole.parse).as_numpy_iterator())
    labels = np.array([y for _, y in records])
    idx = subsets.stratified_indices(labels, 0.1, seed=0)
    np.testing.assert_array_equal(streamed.labels, labels[idx])
    assert list(streamed.encoded) == [records[i][0] for i in idx]
    (batch,) = list(eval_input.eval_batches(streamed, image_size=8, global_batch=len(memory)
                                            + 1))
    np.testing.assert_array_equal(batch["label"][batch["mask"]], labels[idx])


def test_imagenet_fractions_read_the_official_subsets(monkeypatch, tiny_config):
    opened = []
    monkeypatch.setattr(sources, "open_source",
                        lambda config, split, **kw: opened.append((config.dataset, split)))
    for fraction in (0.01, 0.1):
        subsets.train_source(_config(tiny_config, dataset="imagenet2012",
                                     label_fraction=fraction), "train")
    assert opened == [("imagenet2012_subset/1pct", "train"),
                      ("imagenet2012_subset/10pct", "train")]


def test_a_fraction_of_an_unlabelled_split_is_one_clear_error(tmp_path, folder_config,
                                                              write_images):
    write_images(tmp_path / "imgs", 6)
    config = folder_config(tmp_path / "imgs", folder_labels="none")
    config.label_fraction = 0.5
    with pytest.raises(UserError, match="label_fraction=0.5 needs labels"):
        subsets.train_source(config, "train")
