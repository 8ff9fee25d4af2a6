"""The sweeps' CPU-scale dataset: a class-balanced CIFAR-10 subset read from an image folder.

`cifar10_folder_subset/<config>` is a TFDS dataset prepared from root/<class>/*.jpg (the layout
of a CIFAR-10 JPEG folder): per class, the first n_train files (sorted by name) form 'train'
and the next n_val form 'validation', so the validation images are never pretrained on.
"""

import os

import numpy as np
import tensorflow_datasets as tfds

from simclr_jax.errors import UserError

FOLDER_ENV = "SIMCLR_CIFAR10_FOLDER"  # the folder, when the sweep's --cifar10_folder is unset


class SubsetConfig(tfds.core.BuilderConfig):
    """How many images per class go to train and to validation."""

    def __init__(self, *, n_train: int, n_val: int, **kwargs):
        super().__init__(version="1.0.0", **kwargs)
        self.n_train, self.n_val = n_train, n_val


class Cifar10FolderSubset(tfds.core.GeneratorBasedBuilder):
    """Registers `cifar10_folder_subset`; the folder is given as the manual_dir."""

    VERSION = tfds.core.Version("1.0.0")
    BUILDER_CONFIGS = [
        SubsetConfig(name="small", n_train=500, n_val=100,
                     description="500 train + 100 validation images per class"),
        SubsetConfig(name="tiny", n_train=30, n_val=10,
                     description="30 train + 10 validation images per class (tests)"),
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = "root/<class>/*.jpg: CIFAR-10's training images as JPEGs"

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self, description="Class-balanced CIFAR-10 subset from an image folder.",
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(32, 32, 3)),
                "label": tfds.features.ClassLabel(num_classes=10),
            }),
            supervised_keys=("image", "label"))

    def _split_generators(self, dl_manager):
        root = str(dl_manager.manual_dir)
        classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
        files = {c: sorted(os.listdir(os.path.join(root, c))) for c in classes}
        n_train, n_val = self.builder_config.n_train, self.builder_config.n_val
        return {
            "train": self._generate_examples(root, files, 0, n_train),
            "validation": self._generate_examples(root, files, n_train, n_train + n_val),
        }

    def _generate_examples(self, root, files, lo, hi):
        from PIL import Image

        for label, (cls, names) in enumerate(sorted(files.items())):
            for name in names[lo:hi]:
                image = np.asarray(Image.open(os.path.join(root, cls, name)).convert("RGB"))
                yield f"{cls}/{name}", {"image": image, "label": label}


def prepare(name: str, data_dir: str, root: str | None) -> None:
    """Prepares `name` (e.g. 'cifar10_folder_subset/small') in data_dir from the folder root
    (None: $SIMCLR_CIFAR10_FOLDER)."""
    builder = tfds.builder(name, data_dir=data_dir)
    if builder.is_prepared():
        return
    root = root or os.environ.get(FOLDER_ENV)
    if not root:
        raise UserError(f"the cpu-scale sweeps read CIFAR-10 JPEGs from an image folder "
                        f"root/<class>/*.jpg: pass --cifar10_folder=PATH (or set {FOLDER_ENV})")
    if not os.path.isdir(root):
        raise UserError(f"image folder {root!r} not found (--cifar10_folder / {FOLDER_ENV}): "
                        f"the cpu-scale sweeps read CIFAR-10 JPEGs from root/<class>/*.jpg")
    tfds.disable_progress_bar()
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=os.path.abspath(root)))
