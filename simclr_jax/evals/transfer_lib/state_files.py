"""Small JSON / npz files written atomically (a temporary file renamed over the old one), so a
kill at any moment leaves the previous version or the new one, never half of either. Only
process 0 writes (every process computes the same values; one writer avoids racing renames)."""

import io
import json
import os

import jax
import numpy as np
import tensorflow as tf


def write_json(path: str, value) -> None:
    """`value` as indented JSON at `path`."""
    if jax.process_index() != 0:
        return
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.gfile.GFile(path + ".tmp", "w") as f:
        f.write(json.dumps(value, indent=1) + "\n")
    tf.io.gfile.rename(path + ".tmp", path, overwrite=True)


def read_json(path: str):
    """The JSON at `path`, or None when there is none."""
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


def write_npz(path: str, arrays: dict[str, np.ndarray]) -> None:
    """`arrays` as an .npz at `path`."""
    if jax.process_index() != 0:
        return
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.gfile.GFile(path + ".tmp", "wb") as f:
        f.write(buffer.getvalue())
    tf.io.gfile.rename(path + ".tmp", path, overwrite=True)


def read_npz(path: str) -> dict[str, np.ndarray] | None:
    """The arrays of the .npz at `path`, or None when there is none."""
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path, "rb") as f:
        with np.load(io.BytesIO(f.read()), allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
