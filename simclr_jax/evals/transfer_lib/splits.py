"""The train / validation / test Sources of one transfer dataset (and train+validation for the
refit), with multi-hot labels for a multi-label one.

A dataset without its own validation split gets a seeded held-out part of train: a seeded
permutation for random-access sources (in memory, image files), the last examples of the
split (TFDS slices, the record order) for a streamed one.
"""

import dataclasses
import os

import ml_collections
import numpy as np
import tensorflow_datasets as tfds

from simclr_jax.data import builders, sources
from simclr_jax.data.sources import Source
from simclr_jax.errors import UserError
from simclr_jax.evals.transfer_lib import datasets
from simclr_jax.evals.transfer_lib.datasets import Target


@dataclasses.dataclass(frozen=True)
class TransferSplits:
    """What one dataset's protocols read; `multi_hot` holds (N, C) targets of each split of a
    multi-label dataset (rows in the Source's order), None for a single-label one."""

    train: Source
    val: Source
    test: Source
    train_val: Source  # the refit's training set
    num_classes: int
    validation: str  # how validation was made, for results.json
    multi_hot: dict[str, np.ndarray] | None = None


def source_config(target: Target, data_dir: str | None, image_size: int
                  ) -> ml_collections.ConfigDict:
    """The data keys data/sources.py reads, for `target`."""
    return ml_collections.ConfigDict({
        "dataset": target.dataset, "data_dir": data_dir, "image_size": image_size,
        "data_mode": "auto", "folder_labels": "auto", "skip_corrupt_images": False})


def _held_out(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, validation rows), both sorted: a seeded `fraction` of range(n) held out."""
    k = min(n - 1, max(1, int(round(fraction * n))))
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[k:]), np.sort(perm[:k])


def _multi_label_folder(target: Target, root: str) -> dict[str, tuple[Source, np.ndarray]]:
    names = [s for s in (target.train, target.val, target.test) if s is not None]
    read = {s: datasets.read_label_file(os.path.join(root, s)) for s in names}
    classes = sorted({c for labels in read[target.train][1] for c in labels})
    index = {c: i for i, c in enumerate(classes)}
    out = {}
    for split, (files, labels) in read.items():
        unknown = sorted({c for ls in labels for c in ls} - set(index))
        if unknown:
            raise UserError(f"{root}/{split}/{datasets.LABEL_FILE} names classes that "
                            f"train/ never does: {unknown[:5]}")
        hot = np.zeros((len(files), len(classes)), np.int32)
        for row, ls in enumerate(labels):
            hot[row, [index[c] for c in ls]] = 1
        out[split] = (Source(name=f"{target.name}:{split}", num_examples=len(files),
                             num_classes=0, files=files), hot)
    return out


def _tfds_multi_hot(target: Target, data_dir: str | None, split: str) -> np.ndarray:
    builder = builders.get_builder(target.dataset, data_dir)
    key = datasets.MULTI_LABEL_KEY
    ds = builder.as_dataset(split=split, shuffle_files=False,
                            decoders={"image": tfds.decode.SkipDecoding()})
    num = builder.info.features[key].feature.num_classes
    rows = []
    for example in tfds.as_numpy(ds):  # the record order, as the feature pass reads it
        hot = np.zeros(num, np.int32)
        hot[np.asarray(example[key], np.int64)] = 1
        rows.append(hot)
    return np.stack(rows)


def _open(target: Target, config: ml_collections.ConfigDict, split: str
          ) -> tuple[Source, np.ndarray | None]:
    """(Source, multi-hot targets or None) of one split."""
    source = sources.open_source(config, split, for_eval=True)
    hot = (_tfds_multi_hot(target, config.data_dir, split) if target.multi_label else None)
    return source, hot


def _subset(source: Source, hot: np.ndarray | None, idx: np.ndarray, name: str
            ) -> tuple[Source, np.ndarray | None]:
    return sources.subset(source, idx, name), (hot[idx] if hot is not None else None)


def load(target: Target, *, data_dir: str | None, image_size: int, val_fraction: float,
         seed: int) -> TransferSplits:
    """The splits of `target`; UserError when they cannot train a classifier."""
    config = source_config(target, data_dir, image_size)
    if target.multi_label and target.dataset.startswith("folder:"):
        opened = _multi_label_folder(target, target.dataset[len("folder:"):])
        train, test = opened[target.train], opened[target.test]
        val = opened.get(target.val) if target.val else None
        num_classes = train[1].shape[1]
    else:
        train, test = _open(target, config, target.train), _open(target, config, target.test)
        val = _open(target, config, target.val) if target.val else None
        num_classes = train[1].shape[1] if target.multi_label else train[0].num_classes
    datasets.check_classes(target, num_classes)
    if not target.multi_label and train[0].num_classes == 0:
        raise UserError(f"split {target.train!r} of {target.name} has no labels: transfer "
                        f"needs a labelled dataset")
    if val is not None:
        validation = f"the dataset's own split {target.val!r}"
        if train[0].random_access and val[0].random_access:
            train_val = _concat(train[0], val[0], f"{target.name}:{target.train}+{target.val}")
        else:
            train_val = sources.open_source(config, f"{target.train}+{target.val}",
                                            for_eval=True)
    else:
        n = len(train[0])
        validation = (f"a held-out {val_fraction:g} of {target.train!r} (seed {seed})")
        if train[0].random_access:
            rows, val_rows = _held_out(n, val_fraction, seed)
            whole = train
            train = _subset(*whole, rows, f"{target.name}:{target.train} (selection part)")
            val = _subset(*whole, val_rows, f"{target.name}:{target.train} (held out)")
            train_val = whole[0]
        else:
            k = min(n - 1, max(1, int(round(val_fraction * n))))
            validation = f"the last {k} examples of {target.train!r}"
            train = _open(target, config, f"{target.train}[:{n - k}]")
            val = _open(target, config, f"{target.train}[{n - k}:]")
            train_val = sources.open_source(config, target.train, for_eval=True)
    hot = ({"train": train[1], "val": val[1], "test": test[1]} if target.multi_label
           else None)
    return TransferSplits(train=train[0], val=val[0], test=test[0], train_val=train_val,
                          num_classes=num_classes, validation=validation, multi_hot=hot)


def _concat(a: Source, b: Source, name: str) -> Source:
    """Two random-access sources of one kind, one after the other."""
    def cat(x, y):
        return None if x is None or y is None else np.concatenate([x, y])

    return dataclasses.replace(a, name=name, num_examples=len(a) + len(b),
                               images=cat(a.images, b.images), files=cat(a.files, b.files),
                               encoded=cat(a.encoded, b.encoded), labels=cat(a.labels, b.labels))
