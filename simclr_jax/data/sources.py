"""Every kind of dataset behind one interface: `open_source(config, split)` -> Source.

    config.dataset                    what is read                     access
    sklearn_digits, cifar10, stl10,   TFDS split, decoded into host    random (in memory)
    any TFDS image dataset            memory when it has a fixed
                                      image shape and fits in
                                      IN_MEMORY_MAX_BYTES
    imagenet2012, imagenet2012_subset TFDS split, TFRecords streamed   sequential (per-process
    /1pct, large or variable-size     (data/streaming.py)              shard)
    folder:/path/to/root              image files (data/folders.py)    random (files)
    skimage_photos                    scikit-image's sample photos     random (files)
    a subset of a streamed split      its encoded records, in memory   random (encoded)
    (data/subsets.py)

`config.data_mode` ('auto', 'memory', 'stream') overrides the TFDS choice. Random-access sources
give every process its rows of the same global batches (a pure function of seed and step, on any
process count); streamed ones give each process a disjoint shard (split_for_jax_process).
"""

import dataclasses
import os

import ml_collections
import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from simclr_jax.data import builders, folders, streaming
from simclr_jax.errors import UserError

DATA_MODES = ("auto", "memory", "stream")  # config.data_mode
IN_MEMORY_MAX_BYTES = 4 << 30  # decoded size up to which a TFDS split is held in memory
SKIMAGE = "skimage_photos"
# scikit-image's bundled photographs (in the wheel, no download); camera is grey, logo RGBA.
SKIMAGE_FILES = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg",
                 "hubble_deep_field.jpg", "ihc.png", "retina.jpg", "motorcycle_left.png",
                 "camera.png", "logo.png")


@dataclasses.dataclass(frozen=True)
class Source:
    """One split as the input pipelines read it. Exactly one of images / files / encoded /
    stream."""

    name: str  # for messages, e.g. 'cifar10:train[:95%]'
    num_examples: int  # per epoch, over all processes
    num_classes: int = 0  # 0 when unlabelled
    images: np.ndarray | None = None  # decoded uint8 (N, H, W, 3)
    files: np.ndarray | None = None  # encoded image files (N,)
    labels: np.ndarray | None = None  # int32 (N,) for images / files / encoded
    stream: streaming.TfdsStream | None = None  # this process's shard, read sequentially
    encoded: np.ndarray | None = None  # encoded image bytes (N,) held in memory

    def __len__(self) -> int:
        return self.num_examples

    @property
    def random_access(self) -> bool:
        return self.stream is None

    def fetch(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(decoded images or file paths, labels) of the examples `idx` (random access)."""
        data = next(d for d in (self.images, self.files, self.encoded) if d is not None)
        labels = (self.labels[idx] if self.labels is not None
                  else np.zeros(len(idx), np.int32))
        return data[idx], labels


def subset(source: Source, idx: np.ndarray, name: str) -> Source:
    """The examples `idx` of a random-access source (in this order), named `name`."""
    if not source.random_access:
        raise ValueError("subset() needs a random-access source")

    def pick(a: np.ndarray | None) -> np.ndarray | None:
        return None if a is None else a[idx]

    return dataclasses.replace(source, name=name, num_examples=len(idx),
                               images=pick(source.images), files=pick(source.files),
                               encoded=pick(source.encoded), labels=pick(source.labels))


def _keys(builder: tfds.core.DatasetBuilder) -> tuple[str, str | None]:
    """(image feature, class-label feature or None) of a TFDS dataset."""
    features = builder.info.features
    keys = builder.info.supervised_keys
    if (isinstance(keys, tuple) and len(keys) == 2 and all(isinstance(k, str) for k in keys)
            and isinstance(features[keys[0]], tfds.features.Image)):
        image_key, label_key = keys
    else:
        images = [k for k, f in features.items() if isinstance(f, tfds.features.Image)]
        if not images:
            raise UserError(f"dataset {builder.name!r} has no image feature: SimCLR needs "
                            f"an image classification dataset")
        image_key, label_key = images[0], "label" if "label" in features.keys() else None
    if label_key is not None and not isinstance(features[label_key], tfds.features.ClassLabel):
        label_key = None
    return image_key, label_key


def _check_split(builder: tfds.core.DatasetBuilder, name: str, split: str) -> int:
    try:
        return builder.info.splits[split].num_examples
    except (ValueError, KeyError, AssertionError) as e:
        raise UserError(
            f"split {split!r} of dataset {name!r} does not exist (config.train_split / "
            f"config.eval_split); available: {sorted(builder.info.splits.keys())} "
            f"(slices such as train[:95%] work too; {e})") from None


def _tfds_source(config, split, process_index, process_count, for_eval) -> Source:
    name = config.dataset
    builder = builders.get_builder(name, config.data_dir)
    num_examples = _check_split(builder, name, split)
    if num_examples == 0:
        raise UserError(f"split {split!r} of dataset {name!r} is empty")
    image_key, label_key = _keys(builder)
    num_classes = builder.info.features[label_key].num_classes if label_key else 0
    shape = builder.info.features[image_key].shape
    fixed = None not in shape[:2]
    mode = config.data_mode or "auto"  # None: an eval config that inherited nothing
    if mode == "auto":
        fits = fixed and num_examples * shape[0] * shape[1] * 3 <= IN_MEMORY_MAX_BYTES
        mode = "memory" if fits else "stream"
    if mode == "memory" and not fixed:
        raise UserError(f"config.data_mode='memory' needs images of one size, and "
                        f"{name!r} has {shape}; use data_mode='stream' or 'auto'")
    label = f"{name}:{split}"
    if mode == "stream":
        stream = streaming.open_stream(builder, split, image_key, label_key, process_index,
                                       process_count, drop_remainder=not for_eval)
        total = (stream.num_examples * process_count if not for_eval else num_examples)
        logging.info("Streaming %s from TFRecords: %d examples, %d in this process's shard",
                     label, total, stream.num_examples)
        return Source(name=label, num_examples=total, num_classes=num_classes, stream=stream)
    data = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1))
    images = data[image_key]
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    images = np.ascontiguousarray(images[..., :3], np.uint8)  # RGBA: alpha dropped
    labels = data[label_key].astype(np.int32) if label_key else None
    return Source(name=label, num_examples=len(images), num_classes=num_classes,
                  images=images, labels=labels)


def _skimage_source(split: str) -> Source:
    if split != "train":
        raise UserError(f"split {split!r} of dataset {SKIMAGE!r} does not exist; it has one "
                        f"split, 'train' ({len(SKIMAGE_FILES)} photos)")
    try:
        import skimage
    except ImportError:
        raise UserError(f"dataset {SKIMAGE!r} needs scikit-image: pip install -r "
                        f"requirements.txt") from None
    root = os.path.join(os.path.dirname(skimage.__file__), "data")
    files = np.array([os.path.join(root, f) for f in SKIMAGE_FILES], dtype=object)
    return Source(name=f"{SKIMAGE}:{split}", num_examples=len(files), files=files)


def open_source(config: ml_collections.ConfigDict, split: str, *, process_index: int = 0,
                process_count: int = 1, for_eval: bool = False) -> Source:
    """The `split` of config.dataset, for this process; UserError on any bad input."""
    if config.image_size <= 0:
        raise UserError(f"config.image_size: must be > 0, got {config.image_size}")
    name = config.dataset
    if folders.is_folder(name):
        root = name[len(folders.PREFIX):]
        found = folders.open_split(
            root, split, labels=config.folder_labels or "auto",
            skip_corrupt=bool(config.skip_corrupt_images),
            cache_dir=config.data_dir, process_index=process_index,
            process_count=process_count)
        return Source(name=f"{name}:{split}", num_examples=len(found.files),
                      num_classes=len(found.classes), files=found.files, labels=found.labels)
    if name == SKIMAGE:
        return _skimage_source(split)
    return _tfds_source(config, split, process_index, process_count, for_eval)
