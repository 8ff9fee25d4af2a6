"""TFDS builders by name, with clear errors for unknown and unprepared datasets."""

import contextlib
import fcntl
import glob
import os
import shutil
from collections.abc import Iterator

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
            builder = _prepare_embedded(builder, name, data_dir)
        else:
            where = data_dir or "~/tensorflow_datasets"
            raise UserError(
                f"dataset {name!r} is not prepared in data_dir {where} (config.data_dir): "
                f"run `tfds build {name} --data_dir={where}` on a machine with internet "
                f"access (imagenet2012 also needs --manual_dir with the ILSVRC tars), or set "
                f"config.data_dir to where it is prepared")
    return builder


@contextlib.contextmanager
def _prepare_lock(dataset_dir: str) -> Iterator[None]:
    """Exclusive flock next to the dataset while one job prepares it (released by the kernel
    when the job dies, kill -9 included). Object stores have no flock: no lock there."""
    if "://" in dataset_dir:
        yield
        return
    os.makedirs(os.path.dirname(dataset_dir), exist_ok=True)
    with open(f"{dataset_dir}.prepare.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # waits while another job prepares the same data
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _prepare_embedded(builder: tfds.core.DatasetBuilder, name: str, data_dir: str | None
                      ) -> tfds.core.DatasetBuilder:
    """Prepares an embedded dataset once, whatever happened before.

    TFDS writes into `<dataset>/incomplete.*` and renames it when done, so a job killed while
    preparing leaves only that temporary directory: it is removed here (under the lock, no other
    job is writing it) and the data prepared again. Jobs starting together wait for the first.
    """
    dataset_dir = os.path.dirname(os.fspath(builder.data_dir))
    with _prepare_lock(dataset_dir):
        builder = tfds.builder(name, data_dir=data_dir)  # another job may have prepared it
        if builder.is_prepared():
            return builder
        if "://" not in dataset_dir:
            for stale in glob.glob(os.path.join(dataset_dir, "incomplete.*")):
                shutil.rmtree(stale, ignore_errors=True)
        tfds.disable_progress_bar()
        builder.download_and_prepare()
    return builder


def hide_accelerators_from_tf() -> None:
    """TF is only the input pipeline: it must never take accelerator memory from JAX."""
    tf.config.set_visible_devices([], "GPU")
