"""Which datasets a transfer run evaluates, with their splits and headline metric.

`config.datasets` is a comma-separated list of
- TFDS names (prepared in config.data_dir), e.g. `cifar10,dtd`;
- `folder:/root` with root/train/ and root/test/ (and optionally root/val/) of class
  sub-folders, or, for a multi-label set, of images listed in root/<split>/labels.csv
  (`file,labels`: a path relative to the split folder, then its space-separated class names);
- `sklearn_digits`, the embedded digits (no download);
- `paper`: the SimCLR paper's transfer datasets that TFDS has (Birdsnap and FGVC Aircraft are
  not in TFDS 4.9.10: give them as folders).
Any entry may end in `@METRIC` (top1, mean_per_class, map11) to choose its headline metric.

Validation: the dataset's own split where it has one (Kornblith et al. 2019), else a seeded
held-out part of train (config.val_fraction).
"""

import dataclasses
import os

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from simclr_jax.data import builders
from simclr_jax.errors import UserError
from simclr_jax.evals.transfer_lib import metrics

# name -> (train, validation or None, test, headline metric); the paper's Table 8 datasets.
PAPER = {
    "food101": ("train", None, "validation", "top1"),  # TFDS 'validation' is the test set
    "cifar10": ("train", None, "test", "top1"),
    "cifar100": ("train", None, "test", "top1"),
    "sun397/tfds": ("train", "validation", "test", "top1"),
    "cars196": ("train", None, "test", "top1"),
    "voc/2007": ("train", "validation", "test", "map11"),
    "dtd": ("train", "validation", "test", "top1"),
    "oxford_iiit_pet": ("train", None, "test", "mean_per_class"),
    "caltech101": ("train", None, "test", "mean_per_class"),
    "oxford_flowers102": ("train", "validation", "test", "mean_per_class"),
}
NOT_IN_TFDS = {"birdsnap": "top1", "fgvc_aircraft": "mean_per_class"}
MULTI_LABEL_KEY = "labels"  # a TFDS dataset with this Sequence(ClassLabel) (VOC) is multi-label
LABEL_FILE = "labels.csv"
VAL_FOLDERS = ("val", "validation")


@dataclasses.dataclass(frozen=True)
class Target:
    """One transfer dataset: where its splits come from and how it is scored."""

    name: str  # as given (without @metric), used in results.json and file names
    dataset: str  # config.dataset of data/sources.py
    train: str
    val: str | None  # None: a seeded held-out part of train
    test: str
    metric: str
    multi_label: bool

    @property
    def slug(self) -> str:
        """A file-system-safe name for its directory under the workdir."""
        return "".join(c if c.isalnum() or c in "-_." else "_" for c in self.name).strip("_")


def expand(spec: str) -> list[str]:
    """config.datasets -> the list of entries, `paper` expanded."""
    out = []
    for entry in (e.strip() for e in spec.split(",")):
        if entry == "paper":
            out += list(PAPER)
        elif entry:
            out.append(entry)
    if not out:
        raise UserError("config.datasets is empty: name at least one dataset, e.g. "
                        "--config.datasets=sklearn_digits or --config.datasets=paper")
    return list(dict.fromkeys(out))


def _split_metric(entry: str) -> tuple[str, str | None]:
    name, _, metric = entry.partition("@")
    if metric and metric not in metrics.METRICS:
        raise UserError(f"unknown metric {metric!r} in config.datasets entry {entry!r}: use "
                        f"one of {metrics.METRICS}")
    return name, metric or None


def _folder_target(name: str, root: str, metric: str | None) -> Target:
    def has(split: str) -> bool:
        return tf.io.gfile.isdir(os.path.join(root, split))

    missing = [s for s in ("train", "test") if not has(s)]
    if missing:
        raise UserError(f"image folder {root} has no {' or '.join(missing)}/ folder (dataset "
                        f"{name}): a transfer folder needs root/train/ and root/test/ (and "
                        f"optionally root/val/) of class sub-folders")
    val = next((v for v in VAL_FOLDERS if has(v)), None)
    multi = tf.io.gfile.exists(os.path.join(root, "train", LABEL_FILE))
    return Target(name, name, "train", val, "test",
                  metric or ("map11" if multi else "top1"), multi)


def _tfds_target(name: str, data_dir: str | None, metric: str | None) -> Target:
    if name in NOT_IN_TFDS:
        raise UserError(
            f"{name} is not in the TFDS catalogue: give it as an image folder, "
            f"--config.datasets=folder:/path/to/{name}@{NOT_IN_TFDS[name]} with train/, val/ "
            f"and test/ of class sub-folders (docs/transfer.md says how)")
    builder = builders.get_builder(name, data_dir)  # UserError: unknown or unprepared
    splits = set(builder.info.splits.keys())
    if name in PAPER:
        train, val, test, default = PAPER[name]
    else:
        train, default = "train", "top1"
        val = "validation" if "validation" in splits else None
        test = "test" if "test" in splits else None
        if test is None:
            raise UserError(f"dataset {name!r} has no 'test' split (it has {sorted(splits)}): "
                            f"transfer evaluates on a held-out test split")
    features = builder.info.features
    multi = (MULTI_LABEL_KEY in features.keys() and "label" not in features.keys()
             and isinstance(features[MULTI_LABEL_KEY], tfds.features.Sequence)
             and isinstance(features[MULTI_LABEL_KEY].feature, tfds.features.ClassLabel))
    if multi and name not in PAPER:
        default = "map11"
    return Target(name, name, train, val, test, metric or default, multi)


def resolve(entry: str, data_dir: str | None) -> Target:
    """The Target of one config.datasets entry; UserError on anything it cannot evaluate."""
    name, metric = _split_metric(entry)
    if name.startswith("folder:"):
        target = _folder_target(name, name[len("folder:"):], metric)
    else:
        target = _tfds_target(name, data_dir, metric)
    if target.metric in metrics.MULTI_LABEL and not target.multi_label:
        raise UserError(f"metric {target.metric!r} is for multi-label datasets, and {name} is "
                        f"single-label: use @top1 or @mean_per_class")
    if target.metric in metrics.SINGLE_LABEL and target.multi_label:
        raise UserError(f"metric {target.metric!r} is for single-label datasets, and {name} is "
                        f"multi-label: use @map11")
    return target


def check_classes(target: Target, num_classes: int) -> None:
    """A classifier needs two classes at least."""
    if num_classes < 2:
        raise UserError(f"dataset {target.name} has {num_classes} class(es) in "
                        f"{target.train}: a classifier needs two or more")


def read_label_file(split_dir: str) -> tuple[np.ndarray, list[list[str]]]:
    """(absolute file paths, class names of each) of a multi-label folder split."""
    path = os.path.join(split_dir, LABEL_FILE)
    if not tf.io.gfile.exists(path):
        raise UserError(f"multi-label folder split {split_dir} has no {LABEL_FILE} (`file,labels`"
                        f" lines: a path relative to the split folder, its space-separated "
                        f"class names)")
    files, names = [], []
    with tf.io.gfile.GFile(path) as f:
        for n, line in enumerate(f.read().splitlines()):
            if not line.strip() or (n == 0 and line.startswith("file,")):
                continue
            file, _, labels = line.partition(",")
            files.append(os.path.join(split_dir, file.strip()))
            names.append(labels.split())
    return np.array(files, dtype=object), names
