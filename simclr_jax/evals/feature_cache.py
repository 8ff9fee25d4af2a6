"""Frozen features on disk (config.cache_features=True): written once, reused by a rerun.

    <eval workdir>/features/<name>/manifest.json
    <eval workdir>/features/<name>/{features,labels,index}-PPPPP-of-QQQQQ.npy

Each process writes its own shard, batch by batch (host memory: one batch): the rows of every
global batch that its devices hold, in the eval pass's order. `features` is float32
(rows, width), `labels` int32 (rows,), `index` int64 (rows,): the example's index in the split,
-1 on a padding row. Plain .npy files: `np.load` reads them, `np.load(..., mmap_mode='r')`
without reading them whole; all shards together hold every example of the split exactly once.
The manifest is written last, by process 0 once every shard is complete, so a cache without
one is unfinished and ignored. It records what produced the features (checkpoint, a hash of the
encoder's weights, dataset, split, preprocessing) and the layout (examples, global batch,
process count); a cache whose record differs from the job's is recomputed with a warning,
never reused.
"""

import json
import os

import numpy as np
import tensorflow as tf
from absl import logging

FORMAT = "simclr_jax.features/1"
KINDS = {"features": np.float32, "labels": np.int32, "index": np.int64}


def shard_path(directory: str, kind: str, process_index: int, process_count: int) -> str:
    return os.path.join(directory, f"{kind}-{process_index:05d}-of-{process_count:05d}.npy")


def manifest_path(directory: str) -> str:
    return os.path.join(directory, "manifest.json")


def read_manifest(directory: str) -> dict | None:
    """The manifest of a finished cache, or None."""
    path = manifest_path(directory)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


def mismatch(manifest: dict | None, key: dict, layout: dict) -> str | None:
    """Why a cache cannot be reused ('' for an unfinished one), or None when it can."""
    if manifest is None:
        return ""
    if manifest.get("format") != FORMAT:
        return f"format {manifest.get('format')!r} instead of {FORMAT!r}"
    wanted = {**key, **layout}
    stored = {**manifest.get("key", {}), **manifest.get("layout", {})}
    diffs = [f"{k}: {stored.get(k)!r} (cache) vs {v!r} (this job)"
             for k, v in wanted.items() if stored.get(k) != v]
    return "; ".join(diffs) or None


def usable(directory: str, key: dict, layout: dict) -> bool:
    """True when `directory` holds a finished cache for exactly this key and layout; warns
    when it holds one of another checkpoint or config (which the caller then recomputes)."""
    reason = mismatch(read_manifest(directory), key, layout)
    if reason:
        logging.warning("Feature cache %s was written for another checkpoint or config (%s): "
                        "recomputing it", directory, reason)
    elif reason is None:
        logging.info("Reusing the feature cache %s", directory)
    return reason is None


def write_manifest(directory: str, key: dict, layout: dict) -> None:
    """Marks the cache finished (process 0, after every process closed its shard)."""
    tmp = manifest_path(directory) + ".tmp"
    with tf.io.gfile.GFile(tmp, "w") as f:
        json.dump({"format": FORMAT, "key": key, "layout": layout}, f, indent=1)
    tf.io.gfile.rename(tmp, manifest_path(directory), overwrite=True)


def remove_manifest(directory: str) -> None:
    """Before rewriting shards: a crash midway must not leave a manifest over mixed shards."""
    if tf.io.gfile.exists(manifest_path(directory)):
        tf.io.gfile.remove(manifest_path(directory))


class ShardWriter:
    """This process's shard, written batch by batch into temporary files, renamed on close."""

    def __init__(self, directory: str, process_index: int, process_count: int, rows: int,
                 width: int):
        tf.io.gfile.makedirs(directory)
        self._paths = {k: shard_path(directory, k, process_index, process_count)
                       for k in KINDS}
        self._files = {}
        for kind, dtype in KINDS.items():
            f = tf.io.gfile.GFile(self._paths[kind] + ".tmp", "wb")
            shape = (rows, width) if kind == "features" else (rows,)
            np.lib.format.write_array_header_1_0(f, {
                "descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                "fortran_order": False, "shape": shape})
            self._files[kind] = f

    def write(self, features: np.ndarray, labels: np.ndarray, index: np.ndarray) -> None:
        for kind, rows in (("features", features), ("labels", labels), ("index", index)):
            self._files[kind].write(np.ascontiguousarray(rows, KINDS[kind]).tobytes())

    def close(self) -> None:
        for kind, f in self._files.items():
            f.close()
            tf.io.gfile.rename(self._paths[kind] + ".tmp", self._paths[kind], overwrite=True)


class ShardReader:
    """This process's shard, read back `rows` at a time (local files and buckets alike)."""

    def __init__(self, directory: str, process_index: int, process_count: int):
        self._files, self._meta = {}, {}
        for kind in KINDS:
            f = tf.io.gfile.GFile(shard_path(directory, kind, process_index, process_count),
                                  "rb")
            version = np.lib.format.read_magic(f)
            shape, _, dtype = (np.lib.format.read_array_header_1_0(f) if version == (1, 0)
                               else np.lib.format.read_array_header_2_0(f))
            self._files[kind] = f
            self._meta[kind] = (f.tell(), shape, dtype)

    def read(self, start: int, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(features, labels, index) of rows start .. start + count - 1."""
        out = []
        for kind, f in self._files.items():
            offset, shape, dtype = self._meta[kind]
            row = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
            f.seek(offset + start * row)
            data = np.frombuffer(f.read(count * row), dtype)
            out.append(data.reshape((count, *shape[1:])))
        return tuple(out)

    def close(self) -> None:
        for f in self._files.values():
            f.close()
