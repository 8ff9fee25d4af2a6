"""Evaluation input of in-memory splits: exact single pass with padding, eval preprocessing,
supervised training batches, label subsets."""

import numpy as np
import pytest

from simclr_jax.data import eval_input, pretrain_input, splits, subsets
from simclr_jax.data.splits import ArraySplit
from simclr_jax.errors import UserError


def _split(n: int, size: int, num_classes: int = 3, seed: int = 0) -> ArraySplit:
    rng = np.random.default_rng(seed)
    return ArraySplit(images=rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
                      labels=(np.arange(n) % num_classes).astype(np.int32),
                      num_classes=num_classes)


@pytest.mark.parametrize("n,batch,processes", [(23, 8, 1), (23, 8, 2), (5, 8, 4), (16, 8, 2)])
def test_eval_positions_cover_each_example_once(n, batch, processes):
    shares = [eval_input.eval_positions(n, batch, p, processes) for p in range(processes)]
    # Every process runs the same number of batches (collectives need it).
    assert len({idx.shape for idx, _ in shares}) == 1
    assert shares[0][0].shape == (-(-n // batch), batch // processes)
    # Reassembled global batches: process blocks side by side, in order.
    idx = np.concatenate([i for i, _ in shares], axis=1).reshape(-1)
    mask = np.concatenate([m for _, m in shares], axis=1).reshape(-1)
    assert list(idx[mask]) == list(range(n))
    assert not mask[n:].any() and mask[:n].all()  # padding only at the tail


def test_eval_batches_mask_labels_and_no_resize_at_native_size():
    split = _split(11, 8)
    batches = list(eval_input.eval_batches(split, global_batch=4, image_size=8))
    assert [b["mask"].sum() for b in batches] == [4, 4, 3]
    images = np.concatenate([b["image"] for b in batches])[:11]
    labels = np.concatenate([b["label"] for b in batches])[:11]
    np.testing.assert_array_equal(images, split.images)  # <= 32 px: untouched
    np.testing.assert_array_equal(labels, split.labels)


def test_eval_preprocessing_centre_crops_above_32px():
    split = _split(2, 40)
    # 87.5% of 40 = 35: at image_size 35 the crop needs no resize, so it is a plain slice with
    # the official offsets ((40 - 35 + 1) // 2 = 3).
    (batch,) = eval_input.eval_batches(split, global_batch=2, image_size=35)
    np.testing.assert_array_equal(batch["image"], split.images[:, 3:38, 3:38])
    # Upsampling an 8 px digit to 16 px resizes without cropping.
    (small,) = eval_input.eval_batches(_split(2, 8), global_batch=2, image_size=16)
    assert small["image"].shape == (2, 16, 16, 3)


def test_train_dataset_follows_the_seeded_stream_and_is_deterministic():
    split = _split(20, 8, num_classes=20)  # label == index: the labels reveal the order
    kwargs = dict(seed=3, global_batch=8, image_size=8, crop_area_min=0.5)
    first = list(eval_input.train_dataset(split, **kwargs).take(4).as_numpy_iterator())
    again = list(eval_input.train_dataset(split, **kwargs).take(4).as_numpy_iterator())
    stream = pretrain_input.stream_indices(3, 20, 8, 0, 0, 1)
    for a, b in zip(first, again, strict=True):
        idx, _ = next(stream)
        np.testing.assert_array_equal(a["label"], idx)
        np.testing.assert_array_equal(a["image"], b["image"])
    plain = next(eval_input.train_dataset(split, augment=False, **kwargs).as_numpy_iterator())
    np.testing.assert_array_equal(plain["image"], split.images[plain["label"]])
    # A process's rows are its block of the global batch.
    half = next(eval_input.train_dataset(split, process_index=1, process_count=2, **kwargs)
                .as_numpy_iterator())
    np.testing.assert_array_equal(half["label"], first[0]["label"][4:])


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


def test_label_fraction_subset_of_digits_and_imagenet_official_subsets(tfds_dir, monkeypatch):
    full = splits.load_split("sklearn_digits", "train", tfds_dir)
    tenth = subsets.load_train_split("sklearn_digits", "train", tfds_dir, 0.1, seed=0)
    assert len(tenth) == round(0.1 * len(full))
    assert set(np.bincount(tenth.labels)) <= {14, 15, 16}  # ~150 per class in the full split
    loaded = []
    monkeypatch.setattr(splits, "load_split", lambda *args: loaded.append(args) or full)
    subsets.load_train_split("imagenet2012", "train", "gs://b", 0.01, seed=0)
    subsets.load_train_split("imagenet2012", "train", "gs://b", 0.1, seed=0)
    assert [a[0] for a in loaded] == ["imagenet2012_subset/1pct", "imagenet2012_subset/10pct"]
