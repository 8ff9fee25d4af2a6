"""Pictures of the training augmentation (the paper's Figure 4 idea): for N images, the
original and several pairs of augmented views, made by exactly the code that makes training
views (the host pipeline of data/pretrain_input.py, then the train step's augment_views).

The command is `python -m simclr_jax.visualize` (simclr_jax/visualize.py).

Row i: image i whole (shrunk to fit its tile), then `num_pairs` pairs (view 1, view 2). Pair k
uses step k's device keys and stream positions k * N + i, as training would at that step.
"""

import dataclasses
import os

import jax
import numpy as np
import tensorflow as tf
from PIL import Image

from simclr_jax.augment import recipes, tf_image, views
from simclr_jax.config import validate
from simclr_jax.data import builders, pretrain_input, sources
from simclr_jax.errors import UserError

GAP = 4  # white pixels between tiles
BACKGROUND = 255


def grid_size(num_images: int, num_pairs: int, tile: int) -> tuple[int, int]:
    """(height, width) of the grid PNG."""
    cols = 1 + 2 * num_pairs
    return num_images * tile + (num_images + 1) * GAP, cols * tile + (cols + 1) * GAP


def _fit(image: np.ndarray, tile: int) -> np.ndarray:
    """image resized so its longer side is `tile`, centred on a white tile x tile square
    (enlarged with nearest neighbours, so the pixels of small views stay visible)."""
    h, w = image.shape[:2]
    scale = tile / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    pil = Image.fromarray(image).resize(
        size, Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.NEAREST)
    out = np.full((tile, tile, 3), BACKGROUND, np.uint8)
    top, left = (tile - size[1]) // 2, (tile - size[0]) // 2
    out[top:top + size[1], left:left + size[0]] = np.asarray(pil)
    return out


def augmentation_grid(config, num_images: int, num_pairs: int, tile: int) -> np.ndarray:
    """The grid as uint8 (H, W, 3): originals and view pairs of the first num_images images."""
    validate(config)
    builders.hide_accelerators_from_tf()
    source = sources.open_source(config, config.train_split)
    if source.stream is not None:
        raise UserError(f"visualize reads random-access datasets; {source.name} is streamed "
                        f"(set config.data_mode='memory' or use a folder)")
    n = min(num_images, len(source))
    images, _ = source.fetch(np.arange(n))
    read, host_views = pretrain_input.load(source), pretrain_input.host_views(config)
    labels = np.zeros(n, np.int32)
    originals = [tf_image.decode(read(x, 0)[0]) if source.images is None
                 else tf.constant(x) for x in images]
    grid = np.full((*grid_size(n, num_pairs, tile), 3), BACKGROUND, np.uint8)

    def place(row: int, col: int, tile_image: np.ndarray) -> None:
        top, left = GAP + row * (tile + GAP), GAP + col * (tile + GAP)
        grid[top:top + tile, left:left + tile] = tile_image

    for i, original in enumerate(originals):
        place(i, 0, _fit(np.asarray(original), tile))
    # augment_on is a placement: the device one draws the same views (without the host's
    # uint8 rounding) from the host's crops.
    aug = dataclasses.replace(recipes.Augmentation.from_config(config), augment_on="device")
    augment = jax.jit(lambda step, batch: views.augment_views(aug, step, batch))
    for k in range(num_pairs):
        host = [host_views(read(x, 0)[0], tf.constant(k * len(source) + i, tf.int64))
                for i, x in enumerate(images)]
        batch = {key: np.stack([np.asarray(h[key]) for h in host]) for key in host[0]}
        batch["label"] = labels
        x = np.asarray(augment(k, batch))  # (2n, S, S, 3) in [0, 1], views interleaved
        x = np.round(np.clip(x, 0.0, 1.0) * 255).astype(np.uint8)
        for i in range(n):
            for v in range(2):
                place(i, 1 + 2 * k + v, _fit(x[2 * i + v], tile))
    return grid


def write_grid(config, out: str, num_images: int = 4, num_pairs: int = 3, tile: int = 0) -> str:
    """Writes the grid PNG to `out`; returns the path."""
    check_image_path(out, "--out")
    tile = tile or max(config.image_size, 96)
    grid = augmentation_grid(config, num_images, num_pairs, tile)
    try:
        if os.path.dirname(out):
            os.makedirs(os.path.dirname(out), exist_ok=True)
        Image.fromarray(grid).save(out, optimize=True)
    except OSError as e:
        raise UserError(f"could not write {out} (--out): {e}") from None
    return out


def check_image_path(out: str, flag: str) -> None:
    """UserError unless `out` names a PNG (checked before any work)."""
    if os.path.splitext(out)[1].lower() != ".png":
        raise UserError(f"{flag}={out}: expected a .png file name")
