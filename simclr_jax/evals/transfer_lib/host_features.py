"""Frozen features of a transfer split as host arrays, computed once through the eval feature
machinery (evals/features.py: exact eval pass, centre crop, no augmentation; cached on disk
under the dataset's directory and reused by a rerun). The paper's transfer features are of the
shorter side resized to the input size and centre-cropped: crop_fraction=1."""

import jax
import numpy as np
from jax.experimental import multihost_utils

from simclr_jax.data.sources import Source
from simclr_jax.evals import features
from simclr_jax.evals.pretrained import Pretrained


def to_host(x: jax.Array) -> np.ndarray:
    """A global array's full value on this host (every process gets all of it)."""
    if jax.process_count() == 1:
        return np.asarray(x)
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def split_features(pre: Pretrained, source: Source, *, cache_dir: str | None, name: str,
                   data_key: dict, image_size: int, global_batch: int, mesh,
                   crop_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(features float32 (N, width), labels int32 (N,)) in the Source's example order.

    `data_key` names what was read (dataset, split, held-out seed...): a cache written for
    anything else is recomputed, never reused."""
    key = {"source": source.name, "crop_fraction": crop_fraction, **data_key}
    cache = (features.cache_spec(cache_dir, name, pre, key)
             if cache_dir is not None else None)
    bank = features.compute(pre, source, image_size=image_size, global_batch=global_batch,
                            mesh=mesh, cache=cache, crop_fraction=crop_fraction)
    flat = to_host(bank.features).reshape(-1, bank.features.shape[-1])
    labels = to_host(bank.labels).reshape(-1)
    index = bank.index.reshape(-1)
    valid = index >= 0
    x = np.empty((bank.num_examples, flat.shape[1]), np.float32)
    y = np.empty(bank.num_examples, np.int32)
    x[index[valid]], y[index[valid]] = flat[valid], labels[valid]
    del bank
    return x, y
