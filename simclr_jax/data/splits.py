"""Whole splits in host memory (`ArraySplit`), read through the one dispatcher, sources.py.

The evaluation jobs, the kNN monitor and the sweeps hold their (small) splits decoded in memory.
Any Source becomes an ArraySplit here: in-memory TFDS splits as they are; image files and
streamed TFDS records decoded once, pixel for pixel when every image has the same size, else
each resized (bicubic, aspect kept) to 256 px on its shorter side and centre-cropped to 256 x 256
(with the eval's 0.875 centre crop, the standard resize-256 / crop-224).
"""

import dataclasses

import ml_collections
import numpy as np
import tensorflow as tf

from simclr_jax.augment import tf_image
from simclr_jax.data import folders, sources, streaming
from simclr_jax.errors import UserError

SQUARE_SIDE = 256  # variable-size images are held as SQUARE_SIDE x SQUARE_SIDE centre squares


@dataclasses.dataclass(frozen=True)
class ArraySplit:
    """A split held in memory: uint8 images (N, H, W, 3), int32 labels or None."""

    images: np.ndarray
    labels: np.ndarray | None
    num_classes: int

    def __len__(self) -> int:
        return len(self.images)


def _decode_all(images: tf.data.Dataset, square: bool) -> list[np.ndarray]:
    """Encoded images -> decoded uint8 arrays (as SQUARE_SIDE squares when `square`)."""
    def one(encoded):
        image = tf_image.decode(encoded)
        return tf_image.square(image, SQUARE_SIDE) if square else image

    return list(images.map(one, num_parallel_calls=tf.data.AUTOTUNE).as_numpy_iterator())


def _files(source: sources.Source) -> ArraySplit:
    files = tf.data.Dataset.from_tensor_slices(list(source.files)).map(tf.io.read_file)
    try:
        images = _decode_all(files, square=False)
        if len({im.shape for im in images}) > 1:
            images = _decode_all(files, square=True)  # a parallel re-decode beats eager resizes
    except tf.errors.OpError:
        bad = folders.first_unreadable(source.files)
        where = f"{bad[0]} ({bad[1]})" if bad else f"of {source.name}"
        raise UserError(f"cannot read image {where}: evaluation reads every image of "
                        f"{source.name}; remove or replace that file") from None
    return ArraySplit(images=np.stack(images), labels=source.labels,
                      num_classes=source.num_classes)


def _stream(source: sources.Source) -> ArraySplit:
    stream = source.stream
    records = streaming.eval_records(stream).map(stream.parse)
    variable = None in stream.features[stream.image_key].shape[:2]
    images = _decode_all(records.map(lambda image, label: image), square=variable)
    labels = np.array([y for _, y in records.as_numpy_iterator()], np.int32)
    return ArraySplit(images=np.stack(images), labels=labels if stream.label_key else None,
                      num_classes=source.num_classes)


def materialize(source: sources.Source) -> ArraySplit:
    """`source` decoded into host memory (this process's shard of a streamed split)."""
    if source.images is not None:
        return ArraySplit(images=source.images, labels=source.labels,
                          num_classes=source.num_classes)
    return _files(source) if source.files is not None else _stream(source)


def load_split(dataset: str, split: str, data_dir: str | None, *,
               folder_labels: str = "auto", skip_corrupt: bool = False) -> ArraySplit:
    """A whole split of `dataset` (TFDS name, `folder:/root` or an embedded dataset) in memory."""
    config = ml_collections.ConfigDict({
        "dataset": dataset, "data_dir": data_dir, "image_size": SQUARE_SIDE,
        "data_mode": "auto", "folder_labels": folder_labels,
        "skip_corrupt_images": skip_corrupt})
    return materialize(sources.open_source(config, split, for_eval=True))
