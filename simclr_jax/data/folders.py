"""Image folders as datasets: `config.dataset='folder:/path/to/root'`, no preparation step.

Layouts (one split per sub-folder of the root, or the root itself as the only split 'train'):

    root/<split>/<class>/**/*.jpg      labelled: the class is the first-level sub-folder
    root/<split>/**/*.jpg              unlabelled: images directly in the split folder, or
                                       nested in any way with config.folder_labels='none'
    root/<class>/**/*.jpg              root itself is split 'train' (when it has no split folders)

Files are read (and decoded) by the input pipeline as it goes, so a folder of any size works.
The example order is fixed by a hash of each file's relative path: stable across machines and
runs, and class-mixed, so slices like `train[:95%]` / `train[95%:]` are random subsets.
Unreadable files (corrupt, truncated, not an image) stop the run with an error naming the file;
with config.skip_corrupt_images=True the whole split is decoded once up front, bad files are
skipped and counted in the log, and that scan is cached (the log says where).
"""

import dataclasses
import hashlib
import json
import os
import re

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from absl import logging

from simclr_jax.augment import tf_image
from simclr_jax.errors import UserError

PREFIX = "folder:"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
LABEL_MODES = ("auto", "subfolders", "none")


@dataclasses.dataclass(frozen=True)
class FolderSplit:
    """The files of one (sliced) split, in pipeline order, with labels when labelled."""

    files: np.ndarray  # absolute paths (object array of str)
    labels: np.ndarray | None  # int32, or None when unlabelled
    classes: tuple[str, ...]  # class names (sub-folder names); () when unlabelled


def is_folder(dataset: str) -> bool:
    return dataset.startswith(PREFIX)


def _is_remote(path: str) -> bool:
    return "://" in path


def _walk(top: str) -> list[tuple[str, int, int]]:
    """(path, size, mtime_ns) of every non-hidden file under `top` (sizes 0 when remote)."""
    out = []
    if _is_remote(top):
        for d, subdirs, names in tf.io.gfile.walk(top):
            subdirs[:] = [s for s in subdirs if not s.startswith(".")]
            out += [(os.path.join(d, n), 0, 0) for n in names if not n.startswith(".")]
        return out
    for d, subdirs, names in os.walk(top, followlinks=True):
        subdirs[:] = [s for s in subdirs if not s.startswith(".")]
        for n in names:
            if not n.startswith("."):
                st = os.stat(os.path.join(d, n))
                out.append((os.path.join(d, n), st.st_size, st.st_mtime_ns))
    return out


def _subdirs(path: str) -> list[str]:
    return sorted(n.rstrip("/") for n in tf.io.gfile.listdir(path)
                  if not n.startswith(".") and tf.io.gfile.isdir(os.path.join(path, n)))


def _has_images(path: str) -> bool:
    return any(n.lower().endswith(IMAGE_EXTENSIONS) and not tf.io.gfile.isdir(
        os.path.join(path, n)) for n in tf.io.gfile.listdir(path))


def _split_names(spec: str) -> list[str]:
    """'train[:95%]+test' -> ['train', 'test']."""
    return [re.sub(r"\[.*\]$", "", part.strip()) for part in spec.split("+")]


def split_dir(root: str, name: str) -> str:
    """The folder holding split `name`; UserError naming the available splits if none."""
    if tf.io.gfile.isdir(os.path.join(root, name)):
        return os.path.join(root, name)
    subdirs = _subdirs(root)
    known = {"train", "test", "val", "valid", "validation", "eval", "unlabelled", "unlabeled"}
    if name == "train" and not known & set(subdirs):
        return root  # no split folders: the root is the one split, 'train'
    available = sorted(known & set(subdirs)) or ["train (the root folder itself)"]
    raise UserError(
        f"split {name!r} does not exist in image folder {root} (config.train_split / "
        f"config.eval_split); available: {', '.join(available)}. Carve one with a slice, "
        f"e.g. train[:95%] for pretraining and train[95%:] for evaluation")


def _order_key(relpath: str) -> str:
    """Stable pseudo-random order: a hash of the path relative to the split folder."""
    return hashlib.md5(relpath.encode()).hexdigest()


def list_split(root: str, name: str, labels: str, skip_corrupt: bool
               ) -> tuple[list[str], list[int] | None, tuple[str, ...], list[str]]:
    """(image paths in pipeline order, labels or None, classes, ignored non-image files)."""
    top = split_dir(root, name)
    direct_images = _has_images(top)
    labelled = labels == "subfolders" or (labels == "auto" and not direct_images)
    if labelled and direct_images:
        raise UserError(
            f"image folder {top} has images directly inside, but config.folder_labels="
            f"'subfolders' expects root/<split>/<class>/*.jpg; use folder_labels='none'")
    entries = _walk(top)
    images = [e for e in entries if e[0].lower().endswith(IMAGE_EXTENSIONS)]
    other = [e[0] for e in entries if not e[0].lower().endswith(IMAGE_EXTENSIONS)]
    if other and not skip_corrupt:
        raise UserError(
            f"{other[0]} is not an image ({len(other)} such file(s) in {top}; images are "
            f"{' '.join(IMAGE_EXTENSIONS)}): remove them, or set "
            f"config.skip_corrupt_images=True to skip them")
    rel = {p: os.path.relpath(p, top) for p, _, _ in images}
    images.sort(key=lambda e: _order_key(rel[e[0]]))
    paths = [p for p, _, _ in images]
    if not labelled:
        return paths, None, (), other
    # Class indices follow the train split's class folders when there is one, so every
    # split of a root maps the same class name to the same index.
    train = os.path.join(root, "train")
    classes = tuple(_subdirs(train) if top != train and tf.io.gfile.isdir(train) else
                    _subdirs(top))
    index = {c: i for i, c in enumerate(classes)}
    first = [rel[p].split(os.sep)[0] for p in paths]
    unknown = sorted(set(first) - set(index))
    if unknown:
        raise UserError(f"class folder(s) {unknown[:5]} of {top} are not classes of {train}")
    return paths, [index[c] for c in first], classes, other


def _fingerprint(root: str, name: str) -> str:
    entries = sorted(_walk(split_dir(root, name)))
    return hashlib.sha1(json.dumps([root, name, entries]).encode()).hexdigest()[:16]


def _cache_path(cache_dir: str, root: str, name: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{os.path.basename(root.rstrip('/'))}-{name}")
    return os.path.join(cache_dir, "folder_scans", f"{slug}-{_fingerprint(root, name)}.json")


def _undecodable(paths: list[str], process_index: int, process_count: int) -> list[str]:
    """Files TF cannot decode (the decoder training uses); each process scans 1/P of them
    and the results are gathered, so every process gets the same list."""
    ids = np.arange(len(paths))[process_index::process_count]
    ds = tf.data.Dataset.from_tensor_slices((np.array(paths, dtype=object)[ids], ids))
    ds = ds.map(lambda p, i: (tf.size(tf_image.decode(tf.io.read_file(p))), i),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
    ds = ds.ignore_errors()
    bad = np.zeros(len(paths), bool)
    bad[ids] = True
    for _, i in ds.as_numpy_iterator():
        bad[i] = False
    if process_count > 1:
        from jax.experimental import multihost_utils

        bad = np.any(multihost_utils.process_allgather(bad), axis=0)
    return [p for p, b in zip(paths, bad, strict=True) if b]


def scan_corrupt(root: str, name: str, paths: list[str], cache_dir: str,
                 process_index: int = 0, process_count: int = 1) -> list[str]:
    """Unreadable images of split `name`, from the cache if this exact file set was scanned."""
    cache = _cache_path(cache_dir, root, name)
    if tf.io.gfile.exists(cache):
        with tf.io.gfile.GFile(cache) as f:
            bad = json.load(f)["unreadable"]
        logging.info("Corrupt-image scan of %s split %s read from the cache %s", root, name,
                     cache)
        return bad
    logging.info("Scanning %d images of %s split %s for unreadable files (once; cached in "
                 "%s)", len(paths), root, name, cache)
    bad = _undecodable(paths, process_index, process_count)
    tf.io.gfile.makedirs(os.path.dirname(cache))
    tmp = f"{cache}.tmp{process_index}"
    with tf.io.gfile.GFile(tmp, "w") as f:
        json.dump({"root": root, "split": name, "unreadable": bad}, f)
    tf.io.gfile.rename(tmp, cache, overwrite=True)
    return bad


class _Count:
    def __init__(self, n: int):
        self.num_examples = n


def open_split(root: str, spec: str, *, labels: str = "auto", skip_corrupt: bool = False,
               cache_dir: str | None = None, process_index: int = 0,
               process_count: int = 1) -> FolderSplit:
    """The files of split `spec` (a name or TFDS-style slices: 'train[:95%]', 'train+val')."""
    root = root.rstrip("/") or "/"
    if not tf.io.gfile.isdir(root):
        raise UserError(f"image folder {root} does not exist (config.dataset="
                        f"'{PREFIX}{root}'): give the path of an existing folder")
    if labels not in LABEL_MODES:
        raise UserError(f"config.folder_labels: must be one of {LABEL_MODES}, got {labels!r}")
    cache_dir = cache_dir or os.path.join(os.path.expanduser("~"), ".cache", "simclr_jax")
    parts = {}
    for name in dict.fromkeys(_split_names(spec)):
        paths, ys, classes, other = list_split(root, name, labels, skip_corrupt)
        if not paths:
            raise UserError(f"image folder {split_dir(root, name)} contains no images "
                            f"({' '.join(IMAGE_EXTENSIONS)}); check config.dataset")
        if skip_corrupt:
            bad = set(scan_corrupt(root, name, paths, cache_dir, process_index,
                                   process_count))
            keep = [i for i, p in enumerate(paths) if p not in bad]
            if bad or other:
                logging.warning("Image folder %s split %s: skipped %d unreadable image(s) and "
                                "%d non-image file(s) (config.skip_corrupt_images=True); "
                                "first: %s", root, name, len(bad), len(other),
                                sorted(bad)[:3] + other[:3])
            paths = [paths[i] for i in keep]
            ys = None if ys is None else [ys[i] for i in keep]
        parts[name] = (paths, ys, classes)
    try:
        instructions = tfds.core.ReadInstruction.from_spec(spec).to_absolute(
            {n: _Count(len(p[0])) for n, p in parts.items()})
    except (ValueError, AssertionError) as e:
        raise UserError(f"bad split {spec!r} for image folder {root}: {e}") from None
    files, labels_out, classes = [], [], ()
    for ins in instructions:
        paths, ys, classes = parts[ins.splitname]
        sl = slice(ins.from_, ins.to)
        files += paths[sl]
        labels_out += ys[sl] if ys is not None else []
    if not files:
        raise UserError(f"split {spec!r} of image folder {root} is empty")
    labelled = all(p[1] is not None for p in parts.values())
    logging.info("Image folder %s split %s: %d images%s", root, spec, len(files),
                 f", {len(classes)} classes" if labelled else " (unlabelled)")
    return FolderSplit(files=np.array(files, dtype=object),
                       labels=np.array(labels_out, np.int32) if labelled else None,
                       classes=classes if labelled else ())


def first_unreadable(paths) -> tuple[str, str] | None:
    """(path, reason) of the first file in `paths` TF cannot read and decode, else None."""
    for p in paths:
        p = p.decode() if isinstance(p, bytes) else str(p)
        try:
            tf_image.decode(tf.io.read_file(p))
        except (tf.errors.OpError, ValueError) as e:
            reason = getattr(e, "message", str(e)).strip().splitlines()[-1]
            return p, reason
    return None
