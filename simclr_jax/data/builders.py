"""TFDS builders by name, with clear errors for unknown and unprepared datasets."""

import tensorflow as tf
import tensorflow_datasets as tfds

from simclr_jax.data import digits  # noqa: F401  (registers `sklearn_digits`)
from simclr_jax.errors import UserError

# Datasets whose data ships inside an installed package: prepared here on first use.
EMBEDDED = ("sklearn_digits",)


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


def hide_accelerators_from_tf() -> None:
    """TF is only the input pipeline: it must never take accelerator memory from JAX."""
    tf.config.set_visible_devices([], "GPU")
