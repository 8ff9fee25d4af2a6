"""Frozen features of a whole split, kept on the devices: the `Bank`.

One exact eval pass (data/eval_input.py: centre crop, each example once, the last global batch
padded and masked) through the frozen encoder (BN in inference mode). Batch b's features are
written into row b of a (num_batches, B, width) array sharded over the devices along B, so each
device holds its rows of every batch, N / devices x width, and no host ever holds N x width
(the host keeps only the example index of each slot: N integers). On top of it:
- the kNN job scores each device's shard and merges the top-k (evals/weighted_knn.py);
- linear evaluation on cached features gathers the rows of each training batch on the devices
  (`gather_fn`: every device picks the requested rows it holds, a reduce-scatter hands each
  device its part of the batch), in the same seeded order as training on images;
- with a cache directory, every process also writes its rows to disk as it goes, and a rerun
  reads them back instead of running the encoder (evals/feature_cache.py).
"""

import dataclasses
import functools
import hashlib
import json
import os
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from simclr_jax.augment import tf_image
from simclr_jax.core import parallel
from simclr_jax.core.parallel import DATA_AXIS
from simclr_jax.data import eval_input
from simclr_jax.data.sources import Source
from simclr_jax.evals import feature_cache
from simclr_jax.evals.pretrained import Pretrained

BANK_SPEC = P(None, DATA_AXIS)  # (num_batches, B, ...): each device its rows of every batch


@dataclasses.dataclass(frozen=True)
class Bank:
    """Features, labels and mask of one split in eval-pass layout, sharded over the devices."""

    features: jax.Array  # float32 (num_batches, B, width)
    labels: jax.Array  # int32 (num_batches, B)
    mask: jax.Array  # bool (num_batches, B): False on padding
    index: np.ndarray  # int64 (num_batches, B), on every host: example index, -1 on padding
    num_examples: int
    num_classes: int

    @property
    def global_batch(self) -> int:
        return self.index.shape[1]

    @functools.cached_property
    def _slot_of(self) -> np.ndarray:
        flat = self.index.reshape(-1)
        valid = np.flatnonzero(flat >= 0)
        slots = np.full(self.num_examples, -1, np.int64)
        slots[flat[valid]] = valid
        return slots

    def slots(self, examples: np.ndarray) -> np.ndarray:
        """Flat slot (batch * B + row) of each example index."""
        return self._slot_of[examples]


def _bank_sharding(mesh) -> NamedSharding:
    return NamedSharding(mesh, BANK_SPEC)


@functools.lru_cache(maxsize=8)
def _allocate_fn(mesh, num_batches: int, global_batch: int, width: int) -> Callable:
    shape = (num_batches, global_batch)
    return jax.jit(lambda: (jnp.zeros((*shape, width), jnp.float32),
                            jnp.zeros(shape, jnp.int32), jnp.zeros(shape, bool)),
                   out_shardings=(_bank_sharding(mesh),) * 3)


@functools.lru_cache(maxsize=8)
def _put_fn(mesh) -> Callable:
    """(bank arrays, b, batch arrays) -> bank arrays with row b set; in place (donated)."""
    def put(feats, labels, mask, b, h, y, m):
        return feats.at[b].set(h), labels.at[b].set(y), mask.at[b].set(m)

    return jax.jit(put, donate_argnums=(0, 1, 2), out_shardings=(_bank_sharding(mesh),) * 3)


@functools.lru_cache(maxsize=8)
def _feature_fn(module, mesh) -> Callable:
    """h (float32) of uint8 images, BN in inference mode, rows sharded like the batch."""
    return jax.jit(lambda v, x: module.apply(v, x.astype(jnp.float32) / 255.0,
                                             train=False).astype(jnp.float32),
                   out_shardings=parallel.batch_sharded(mesh))


def local_rows(x: jax.Array) -> np.ndarray:
    """This process's rows of a batch-sharded global array (one contiguous block: the mesh
    orders devices by process)."""
    shards = {s.index[0].start or 0: s for s in x.addressable_shards}
    return np.concatenate([np.asarray(shards[k].data) for k in sorted(shards)])


def _all_hosts(local_index: np.ndarray) -> np.ndarray:
    """(num_batches, B / P) of every process -> (num_batches, B) on every host."""
    if jax.process_count() == 1:
        return local_index
    gathered = np.asarray(multihost_utils.process_allgather(local_index))  # (P, nb, B / P)
    return gathered.transpose(1, 0, 2).reshape(local_index.shape[0], -1)


def weights_digest(pre: Pretrained) -> str:
    """A hash of the encoder's weights and BN statistics: which encoder made a cache."""
    digest = hashlib.sha1()
    for path, leaf in jax.tree_util.tree_leaves_with_path(pre.variables):
        digest.update(jax.tree_util.keystr(path).encode())
        digest.update(np.asarray(leaf.addressable_data(0)).tobytes())
    return digest.hexdigest()[:16]


@dataclasses.dataclass(frozen=True)
class CacheSpec:
    """Where a split's features are cached and what must match for them to be reused."""

    directory: str
    key: dict  # JSON-able identity: checkpoint, weights digest, data and preprocessing


def cache_spec(workdir: str, name: str, pre: Pretrained, data: dict) -> CacheSpec:
    """The cache of split `name` under the eval workdir; `data` names what was read
    (dataset, split, label fraction, image size, ...)."""
    key = {"checkpoint": pre.path, "checkpoint_step": pre.step,
           "encoder_weights": weights_digest(pre), **data}
    key = json.loads(json.dumps(key))  # as it will read back from the manifest
    return CacheSpec(directory=os.path.join(workdir, "features", name), key=key)


def compute(pre: Pretrained, source: Source, *, image_size: int, global_batch: int, mesh,
            cache: CacheSpec | None = None,
            crop_fraction: float = tf_image.EVAL_CROP_FRACTION) -> Bank:
    """The bank of `source` (reused from `cache` when it holds exactly these features);
    `crop_fraction` of the eval centre crop (a cache's key must name a non-default one)."""
    pi, pc = jax.process_index(), jax.process_count()
    nb = eval_input.num_batches(len(source), global_batch)
    local = global_batch // pc
    layout = {"num_examples": len(source), "global_batch": global_batch, "num_batches": nb,
              "process_count": pc, "width": pre.width}
    if cache is not None and _agree(feature_cache.usable(cache.directory, cache.key, layout)):
        return _read(cache, source, nb, global_batch, pre.width, mesh)
    if cache is not None:
        _once(lambda: feature_cache.remove_manifest(cache.directory))
    writer = (feature_cache.ShardWriter(cache.directory, pi, pc, nb * local, pre.width)
              if cache is not None else None)
    fn, put = _feature_fn(pre.module, mesh), _put_fn(mesh)
    bank = _allocate_fn(mesh, nb, global_batch, pre.width)()
    index = np.full((nb, local), -1, np.int64)
    for b, batch in enumerate(eval_input.eval_batches(
            source, image_size=image_size, global_batch=global_batch, process_index=pi,
            process_count=pc, crop_fraction=crop_fraction)):
        g = parallel.global_batch(mesh, {k: batch[k] for k in ("image", "label", "mask")})
        h = fn(pre.variables, g["image"])
        bank = put(*bank, b, h, g["label"], g["mask"])
        index[b] = batch["index"]
        if writer is not None:
            writer.write(local_rows(h), batch["label"], batch["index"])
    if writer is not None:
        writer.close()
        multihost_sync("simclr_jax.feature_cache_written")
        _once(lambda: feature_cache.write_manifest(cache.directory, cache.key, layout))
    return _finished(bank, index, source)


def _read(cache: CacheSpec, source: Source, nb: int, global_batch: int, width: int,
          mesh) -> Bank:
    pi, pc = jax.process_index(), jax.process_count()
    local = global_batch // pc
    reader = feature_cache.ShardReader(cache.directory, pi, pc)
    put = _put_fn(mesh)
    bank = _allocate_fn(mesh, nb, global_batch, width)()
    index = np.empty((nb, local), np.int64)
    try:
        for b in range(nb):
            h, y, idx = reader.read(b * local, local)
            g = parallel.global_batch(mesh, {"h": h, "label": y, "mask": idx >= 0})
            bank = put(*bank, b, g["h"], g["label"], g["mask"])
            index[b] = idx
    finally:
        reader.close()
    return _finished(bank, index, source)


def _finished(bank: tuple, index: np.ndarray, source: Source) -> Bank:
    # Wait for the bank's programs: on XLA:CPU's simulated devices a collective still in
    # flight while the caller compiles the next program (the kNN scorer, the bank gather) can
    # miss its 40 s rendezvous and abort the process (measured: tests/evals/test_quality.py).
    bank = jax.block_until_ready(bank)
    return Bank(*bank, index=_all_hosts(index), num_examples=len(source),
                num_classes=source.num_classes)


def from_host(features: np.ndarray, labels: np.ndarray, num_classes: int, global_batch: int,
              mesh) -> Bank:
    """A bank of features given on every host (tests, small data), in eval-pass layout."""
    pi, pc = jax.process_index(), jax.process_count()
    idx, mask = eval_input.eval_positions(len(features), global_batch, pi, pc)
    put = _put_fn(mesh)
    bank = _allocate_fn(mesh, len(idx), global_batch, features.shape[1])()
    for b, (i, m) in enumerate(zip(idx, mask, strict=True)):
        g = parallel.global_batch(mesh, {"h": features[i].astype(np.float32),
                                         "label": labels[i].astype(np.int32), "mask": m})
        bank = put(*bank, b, g["h"], g["label"], g["mask"])
    return Bank(*bank, index=_all_hosts(np.where(mask, idx, -1).astype(np.int64)),
                num_examples=len(features), num_classes=num_classes)


@functools.lru_cache(maxsize=8)
def gather_fn(mesh, bank_batch: int) -> Callable:
    """fn(bank features, bank labels, slots (B,) replicated) -> {'image': rows (B, width),
    'label'} sharded over the batch: the training batch of those slots, assembled on the
    devices. Each device contributes the rows it holds (zeros elsewhere) and a reduce-scatter
    sums them, so every value arrives exactly (x + 0 + ... + 0 = x)."""
    def local(feats, labels, slots):
        rows = feats.shape[1]
        b, col = slots // bank_batch, slots % bank_batch - jax.lax.axis_index(DATA_AXIS) * rows
        mine = (col >= 0) & (col < rows)
        col = jnp.clip(col, 0, rows - 1)
        h = jnp.where(mine[:, None], feats[b, col], 0.0)
        y = jnp.where(mine, labels[b, col], 0)
        scatter = functools.partial(jax.lax.psum_scatter, axis_name=DATA_AXIS,
                                    scatter_dimension=0, tiled=True)
        return {"image": scatter(h), "label": scatter(y)}

    sharded = jax.shard_map(local, mesh=mesh, in_specs=(BANK_SPEC, BANK_SPEC, P()),
                            out_specs=P(DATA_AXIS))
    return jax.jit(sharded)


def global_from_host(mesh, value: np.ndarray, spec: P) -> jax.Array:
    """A global array from a host array that every process holds in full."""
    sharding = NamedSharding(mesh, spec)
    return jax.make_array_from_callback(value.shape, sharding, lambda idx: value[idx])


def multihost_sync(name: str) -> None:
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def _agree(value: bool) -> bool:
    """Process 0's answer on every process (all must take the same branch)."""
    if jax.process_count() == 1:
        return value
    return bool(multihost_utils.broadcast_one_to_all(np.int32(value)))


def _once(fn: Callable[[], None]) -> None:
    """fn() on process 0 only, the others waiting for it."""
    if jax.process_index() == 0:
        fn()
    multihost_sync("simclr_jax.feature_cache_once")
