"""Label-fraction subsets for semi-supervised fine-tuning (1% / 10% of the labels).

ImageNet uses the paper's fixed subsets (TFDS `imagenet2012_subset/1pct` and `/10pct`, the image
lists of the official code), streamed like any large split; every other dataset gets a
stratified subset drawn from the seed: the chosen rows of a random-access source (in-memory
arrays, image files), or, for a streamed split, the chosen records' encoded bytes read into
memory (a fraction of the split's TFRecord bytes, at most sources.IN_MEMORY_MAX_BYTES).
"""

import ml_collections
import numpy as np
import tensorflow as tf

from simclr_jax.data import sources, streaming
from simclr_jax.data.sources import Source
from simclr_jax.errors import UserError

IMAGENET_SUBSETS = {0.01: "imagenet2012_subset/1pct", 0.1: "imagenet2012_subset/10pct"}


def stratified_indices(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Sorted indices of round(fraction * N) examples, each class represented in proportion.

    Class quotas are fraction * n_c, rounded by largest remainder so they sum to the total;
    which examples fill a quota is a seeded draw.
    """
    if not 0 < fraction <= 1:
        raise UserError(f"config.label_fraction: must be in (0, 1], got {fraction}")
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    total = max(1, int(round(fraction * len(labels))))
    exact = fraction * counts
    quota = np.floor(exact).astype(int)
    # Largest remainder first; a seeded random key breaks ties between equal remainders.
    order = np.lexsort((rng.random(len(classes)), -(exact - quota)))
    quota[order[:total - quota.sum()]] += 1
    chosen = [rng.choice(np.flatnonzero(labels == c), q, replace=False)
              for c, q in zip(classes, quota, strict=True)]
    return np.sort(np.concatenate(chosen))


def official_subset(config: ml_collections.ConfigDict, split: str) -> str | None:
    """The TFDS dataset of the official ImageNet label subset this config asks for, if any."""
    if (config.dataset == "imagenet2012" and split == "train"
            and config.label_fraction in IMAGENET_SUBSETS):
        return IMAGENET_SUBSETS[config.label_fraction]
    return None


def _stream_subset(source: Source, config: ml_collections.ConfigDict, split: str,
                   name: str) -> Source:
    """The stratified subset of a streamed split as encoded records held in memory."""
    whole = sources.open_source(config, split, for_eval=True).stream  # every shard, in order
    records = streaming.eval_records(whole).map(whole.parse,
                                                num_parallel_calls=tf.data.AUTOTUNE)
    labels = np.fromiter((y for _, y in records.map(lambda x, y: (0, y)).as_numpy_iterator()),
                         np.int32)
    idx = stratified_indices(labels, config.label_fraction, config.seed)
    keep = np.zeros(len(labels), bool)
    keep[idx] = True
    encoded, total = [], 0
    for i, (image, _) in enumerate(records.as_numpy_iterator()):
        if keep[i]:
            encoded.append(image)
            total += len(image)
            if total > sources.IN_MEMORY_MAX_BYTES:
                raise UserError(
                    f"config.label_fraction={config.label_fraction} of the streamed split "
                    f"{source.name} is over {sources.IN_MEMORY_MAX_BYTES >> 30} GB of encoded "
                    f"images: prepare the subset as its own dataset (a TFDS builder or an image "
                    f"folder) and evaluate on it with label_fraction=1")
    return Source(name=name, num_examples=len(idx), num_classes=source.num_classes,
                  encoded=np.array(encoded, dtype=object), labels=labels[idx])


def train_source(config: ml_collections.ConfigDict, split: str, *, process_index: int = 0,
                 process_count: int = 1, for_eval: bool = False) -> Source:
    """The training split at config.label_fraction of its labels (all of it at 1)."""
    fraction = config.label_fraction
    if subset_name := official_subset(config, split):
        official = ml_collections.ConfigDict(config.to_dict())
        official.dataset = subset_name
        return sources.open_source(official, "train", process_index=process_index,
                                   process_count=process_count, for_eval=for_eval)
    full = sources.open_source(config, split, process_index=process_index,
                               process_count=process_count, for_eval=for_eval)
    if fraction == 1:
        return full
    if full.num_classes == 0:
        raise UserError(f"config.label_fraction={fraction} needs labels, but split {split!r} "
                        f"of dataset {config.dataset!r} has none")
    name = f"{full.name} ({fraction:g} of the labels)"
    if not full.random_access:
        return _stream_subset(full, config, split, name)
    return sources.subset(full, stratified_indices(full.labels, fraction, config.seed), name)
