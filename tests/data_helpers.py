"""Small image folders for the data tests (written with Pillow: real JPEG/PNG files)."""

from pathlib import Path

import numpy as np
from PIL import Image

from tests.helpers import tiny_config

# (extension, PIL mode, size): every kind of file a user folder may hold.
KINDS = [(".jpg", "RGB", (40, 30)), (".png", "L", (24, 36)), (".png", "RGBA", (33, 33)),
         (".jpg", "CMYK", (50, 20)), (".jpeg", "L", (17, 29)), (".webp", "RGB", (30, 30))]


def smooth_image(seed: int, size: tuple[int, int]) -> np.ndarray:
    """A smooth random colour pattern (h, w, 3) uint8: augmentations act on it visibly."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    freq, phase = rng.uniform(1, 4, (3, 2)), rng.uniform(0, 6.3, 3)
    chans = [np.sin(2 * np.pi * (f[0] * yy + f[1] * xx) + p)
             for f, p in zip(freq, phase, strict=True)]
    return np.round((np.stack(chans, -1) + 1) * 127.5).astype(np.uint8)


def write_images(folder: Path, count: int, seed: int = 0) -> list[Path]:
    """`count` images cycling through KINDS (grey, RGBA, CMYK, several sizes and formats)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        ext, mode, size = KINDS[i % len(KINDS)]
        path = folder / f"img{seed}_{i:03d}{ext}"
        Image.fromarray(smooth_image(seed * 1000 + i, size)).convert(mode).save(path)
        paths.append(path)
    return paths


def truncated_jpeg(path: Path) -> Path:
    """A JPEG cut after 30% of its bytes: every crop of >= 10% of the area needs lost rows."""
    full = path.with_suffix(".full.jpg")
    Image.fromarray(smooth_image(99, (200, 150))).save(full, quality=95)
    data = full.read_bytes()
    full.unlink()
    path.write_bytes(data[: int(0.3 * len(data))])
    return path


def labelled_folder(root: Path, per_class: int = 6) -> Path:
    """root/{train,val}/{cat,dog}/*: a labelled folder with two splits."""
    for split, n in (("train", per_class), ("val", 2)):
        for c, cls in enumerate(("cat", "dog")):
            write_images(root / split / cls, n, seed=10 * c + (split == "val"))
    return root


def folder_config(tfds_dir: str, root: Path, **overrides):
    """tiny_config reading the folder at `root` (the folder-scan cache goes to tfds_dir)."""
    return tiny_config(tfds_dir, dataset=f"folder:{root}", **overrides)


def sharded_digits(data_dir: str):
    """The embedded digits prepared in 4 TFRecord shards per split (streaming tests)."""
    import tensorflow_datasets as tfds

    from simclr_jax.data import digits  # noqa: F401  (registers the builder)

    builder = tfds.builder("sklearn_digits", data_dir=data_dir)
    if not builder.is_prepared():
        tfds.disable_progress_bar()
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(num_shards=4))
    return builder
