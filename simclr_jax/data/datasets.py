"""Loading a dataset split into host memory, with clear errors for bad names and paths."""

import dataclasses

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from simclr_jax.data import digits  # noqa: F401  (registers `sklearn_digits`)
from simclr_jax.errors import UserError

# Datasets whose data ships inside an installed package: prepared here on first use.
EMBEDDED = ("sklearn_digits",)


@dataclasses.dataclass(frozen=True)
class ArraySplit:
    """A split held in memory: uint8 images (N, H, W, 3), int32 labels or None."""

    images: np.ndarray
    labels: np.ndarray | None
    num_classes: int

    def __len__(self) -> int:
        return len(self.images)


def get_builder(name: str, data_dir: str | None) -> tfds.core.DatasetBuilder:
    """The TFDS builder for `name`, prepared; UserError if it is unknown or not prepared."""
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise UserError(
            f"unknown dataset {name!r} (config.dataset): use a TFDS catalog name such as "
            f"cifar10 or imagenet2012, or the embedded {EMBEDDED[0]!r}") from None
    if not builder.is_prepared():
        if name in EMBEDDED:
            tfds.disable_progress_bar()
            builder.download_and_prepare()
        else:
            where = data_dir or "~/tensorflow_datasets"
            raise UserError(
                f"dataset {name!r} is not prepared in data_dir {where} (config.data_dir): "
                f"run `tfds build {name} --data_dir={where}` on a machine with internet "
                f"access (imagenet2012 also needs --manual_dir with the ILSVRC tars), or set "
                f"config.data_dir to where it is prepared")
    return builder


def load_split(name: str, split: str, data_dir: str | None) -> ArraySplit:
    """Reads a whole split into memory (small and medium datasets: digits, CIFAR, STL-10, and
    image folders, `folder:/root`)."""
    if name.startswith("folder:"):
        from simclr_jax.data import folders  # folders imports this module

        return folders.load_in_memory(name[len(folders.PREFIX):], split, cache_dir=data_dir)
    builder = get_builder(name, data_dir)
    variable_size = None in builder.info.features["image"].shape[:2]
    try:
        ds = builder.as_dataset(split=split, batch_size=None if variable_size else -1)
    except (ValueError, KeyError) as e:
        raise UserError(
            f"split {split!r} of dataset {name!r} does not exist (config.train_split / "
            f"config.eval_split); available: {sorted(builder.info.splits.keys())} ({e})") from None
    if variable_size:  # e.g. ImageNet: held as 256 x 256 squares (host_augment.square)
        from simclr_jax.data import host_augment

        ds = ds.map(lambda x: {**x, "image": host_augment.square(x["image"])},
                    num_parallel_calls=tf.data.AUTOTUNE).batch(1024)
        parts = list(tfds.as_numpy(ds))
        if not parts:
            raise UserError(f"split {split!r} of dataset {name!r} is empty")
        data = {k: np.concatenate([p[k] for p in parts]) for k in ("image", "label")
                if k in parts[0]}
    else:
        data = tfds.as_numpy(ds)
    images = data["image"]
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    elif images.shape[-1] == 4:
        images = images[..., :3]
    labels, num_classes = None, 0
    features = builder.info.features
    label_feature = features["label"] if "label" in features.keys() else None
    if "label" in data and isinstance(label_feature, tfds.features.ClassLabel):
        labels = data["label"].astype(np.int32)
        num_classes = label_feature.num_classes
    if len(images) == 0:
        raise UserError(f"split {split!r} of dataset {name!r} is empty")
    return ArraySplit(images=images.astype(np.uint8), labels=labels, num_classes=num_classes)


def hide_accelerators_from_tf() -> None:
    """TF is only the input pipeline: it must never take accelerator memory from JAX."""
    tf.config.set_visible_devices([], "GPU")
