"""Both views of a training batch, and where their augmentation runs (a placement, not a second
implementation: the same jnp recipes either way).

- augment_on='device' (default): inside the jitted train step (`augment_views`); the host has
  cropped and flipped each view (augment/crop.py), or sent one canvas per image that the device
  crops twice (crop_on='device').
- augment_on='host': `HostColor` runs the same recipe on the host's CPU backend on each batch
  before it goes to the accelerator, rounded to uint8 (one byte per channel on the wire); the
  train step then only rescales the views.

Every example draws from its own key, fold_in(fold_in(step key, view), index in the *global*
batch), so the draw depends neither on how the batch is split over devices and processes nor on
the placement.
"""

import concurrent.futures
import functools
import os
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from simclr_jax.augment import crop, recipes
from simclr_jax.augment.recipes import Augmentation


def step_key(seed: int, step: jax.Array) -> jax.Array:
    """The augmentation key of training step `step`."""
    return jax.random.fold_in(jax.random.PRNGKey(seed), step)

def augment_batch(key: jax.Array, images: jnp.ndarray, augment_one: Callable,
                  index: jnp.ndarray | None = None) -> jnp.ndarray:
    """uint8 images (B, H, W, 3) -> [0, 1] float, image i by augment_one(fold_in(key, index[i]),
    image); `index`: the images' positions in the global batch (default 0..B-1)."""
    x = images.astype(jnp.float32) / 255.0
    index = jnp.arange(images.shape[0]) if index is None else index
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(index)
    return jax.vmap(augment_one)(keys, x)

def view_augmenter(aug: Augmentation, view: int) -> Callable:
    """fn(key, [0, 1] image) -> the view's augmentation on the device: the paper's colour
    recipe when both views are standard, else the view's ablation op list."""
    if aug.uses_default:
        return functools.partial(recipes.paper_color, aug=aug)
    names = recipes.view_op_names(aug, aug.view_ops(view))
    return lambda key, x: recipes.apply_ops(key, x, names, aug)

def augment_views(aug: Augmentation, step: jax.Array,
                  batch: dict[str, jax.Array]) -> jnp.ndarray:
    """The views of a batch as the train step sees them, interleaved as (2B, H, W, 3): row 2i
    and 2i+1 are image i's views, so the reshape is local to each device's shard."""
    key = step_key(aug.seed, step)
    if aug.crop_on == "device":  # the host sent one canvas per image
        batch = {**batch, **crop.crop_views(jax.random.fold_in(key, 3), batch,
                                            aug.image_size, aug.crop_area_min)}
    if aug.augment_on == "host":  # HostColor already augmented them
        views = [batch[f"view{v}"].astype(jnp.float32) / 255.0 for v in (1, 2)]
    else:
        views = [augment_batch(jax.random.fold_in(key, v), batch[f"view{v}"],
                               view_augmenter(aug, v)) for v in (1, 2)]
    x = jnp.stack(views, axis=1)
    return x.reshape((-1,) + x.shape[2:])


@functools.partial(jax.jit, static_argnums=0)
def _color_on_host(aug: Augmentation, step: jax.Array, index: jax.Array,
                   views: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
    key = step_key(aug.seed, step)
    return tuple(
        jnp.round(augment_batch(jax.random.fold_in(key, v), images, view_augmenter(aug, v),
                                index) * 255.0).astype(jnp.uint8)
        for v, images in zip((1, 2), views, strict=True))


def host_workers(local_batch: int, cores: int) -> int:
    """Chunks a host batch is cut into: the most that divide it, up to one per core (equal
    chunks, so one compiled shape)."""
    return max(n for n in range(1, min(cores, local_batch) + 1) if local_batch % n == 0)


class HostColor:
    """augment_on='host': the views' colour recipe on the host CPU, per host batch.

    Called with a batch of cropped uint8 views and their global stream positions (as
    data/pretrain_input.py yields them); returns the batch with augmented uint8 views, equal to
    the device placement's views rounded to uint8. One XLA:CPU computation runs on about one
    core, so the batch is cut into chunks run concurrently, one per host core.
    """

    def __init__(self, aug: Augmentation, global_batch: int):
        self.aug, self.global_batch = aug, global_batch
        self.cpu = jax.local_devices(backend="cpu")[0]
        self.cores = len(os.sched_getaffinity(0))
        self.pool = concurrent.futures.ThreadPoolExecutor(self.cores, "host-color")

    def _chunk(self, step: np.int32, index: np.ndarray, view1: np.ndarray,
               view2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        args = jax.device_put((step, index.astype(np.int32), (view1, view2)), self.cpu)
        return tuple(np.asarray(v) for v in _color_on_host(self.aug, *args))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        position = batch["position"]
        step = np.int32(position[0] // self.global_batch)
        n = host_workers(len(position), self.cores)
        parts = [np.array_split(a, n) for a in
                 (position % self.global_batch, batch["view1"], batch["view2"])]
        done = list(self.pool.map(lambda p: self._chunk(step, *p), zip(*parts, strict=True)))
        return {**batch, "view1": np.concatenate([d[0] for d in done]),
                "view2": np.concatenate([d[1] for d in done])}
