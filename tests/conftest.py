"""Shared test setup: 8 simulated CPU devices (before JAX starts), quiet TF, a TFDS dir, tiny
configs, subprocess jobs, small image folders and one tiny pretraining run, as fixtures."""

import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
# One persistent compilation cache for the session and the jobs it starts: most tests compile
# the same tiny train step, and a rerun of a killed job the same programs as its first run.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", tempfile.mkdtemp(prefix="simclr-jax-cache-"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
# ... written by every process of a multi-process job, not just process 0 (support/sitecustomize).
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(Path(__file__).with_name("support")), *filter(None, [os.environ.get("PYTHONPATH")])])

from simclr_jax.cpu.collectives import keep_collectives_in_order  # noqa: E402

# The 8 devices' all-reduces in one order, as in the jobs (cpu/collectives.py).
keep_collectives_in_order()

import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# (extension, PIL mode, size): every kind of file a user folder may hold.
IMAGE_KINDS = [(".jpg", "RGB", (40, 30)), (".png", "L", (24, 36)), (".png", "RGBA", (33, 33)),
               (".jpg", "CMYK", (50, 20)), (".jpeg", "L", (17, 29)), (".webp", "RGB", (30, 30))]


@pytest.fixture(scope="session")
def tfds_dir(tmp_path_factory) -> str:
    """One TFDS data_dir per test session (the embedded digits get prepared there once)."""
    return str(tmp_path_factory.mktemp("tfds"))


def _tiny_config(tfds_dir: str, **overrides) -> ml_collections.ConfigDict:
    from simclr_jax.config import get_config

    c = get_config()
    c.data_dir = tfds_dir
    c.image_size = 8
    c.width_multiplier = 0.125
    c.proj_out_dim = 16
    c.batch_size = 16
    c.num_train_steps = 4
    c.log_every_steps = 1
    c.checkpoint_every_steps = 2
    # XLA's own convolutions compile in half the time of the CPU default (conv_impl=auto:
    # Winograd), and most of an in-process test is compilation. The CPU convolutions are
    # tested against XLA's in tests/models, and the job tests (subprocesses, default flags)
    # run them end to end.
    c.conv_impl = "xla"
    c.update(overrides)
    return c


@pytest.fixture(scope="session")
def tiny_config(tfds_dir) -> Callable[..., ml_collections.ConfigDict]:
    """tiny_config(**overrides): the embedded default shrunk to a ResNet-18 at 1/8 width on
    8 px views, 4 steps of B=16, XLA's convolutions, reading the session's TFDS dir."""
    return lambda **overrides: _tiny_config(tfds_dir, **overrides)


@pytest.fixture(scope="session")
def run_job() -> Callable[..., subprocess.CompletedProcess]:
    """run_job(module, *flags, devices=1, timeout=600): `python -m simclr_jax.<module>` in a
    subprocess with `devices` simulated devices, from the repository root."""

    def run(module: str, *flags: str, devices: int = 1, timeout: int = 600,
            env: dict | None = None) -> subprocess.CompletedProcess:
        full_env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
                        **(env or {}))
        return subprocess.run([sys.executable, "-m", f"simclr_jax.{module}", *flags],
                              env=full_env, cwd=ROOT, capture_output=True, text=True,
                              timeout=timeout, start_new_session=True)

    return run


@pytest.fixture(scope="session")
def error_lines() -> Callable[[subprocess.CompletedProcess], list[str]]:
    """error_lines(result): the `error:` lines a finished job printed."""
    return lambda result: [line for line in (result.stdout + result.stderr).splitlines()
                           if line.startswith("error: ")]


@pytest.fixture(scope="session")
def metric_rows() -> Callable[[str | Path], list[dict]]:
    """metric_rows(workdir): the rows of <workdir>/metrics.jsonl ([] before the first)."""

    def rows(workdir) -> list[dict]:
        path = Path(workdir) / "metrics.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    return rows


# ---- Images ------------------------------------------------------------------------------------

def _smooth_image(seed: int, size: tuple[int, int]) -> np.ndarray:
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    freq, phase = rng.uniform(1, 4, (3, 2)), rng.uniform(0, 6.3, 3)
    chans = [np.sin(2 * np.pi * (f[0] * yy + f[1] * xx) + p)
             for f, p in zip(freq, phase, strict=True)]
    return np.round((np.stack(chans, -1) + 1) * 127.5).astype(np.uint8)


def _write_images(folder: Path, count: int, seed: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        ext, mode, size = IMAGE_KINDS[i % len(IMAGE_KINDS)]
        path = folder / f"img{seed}_{i:03d}{ext}"
        Image.fromarray(_smooth_image(seed * 1000 + i, size)).convert(mode).save(path)
        paths.append(path)
    return paths


@pytest.fixture(scope="session")
def smooth_image() -> Callable[[int, tuple[int, int]], np.ndarray]:
    """smooth_image(seed, (w, h)): a smooth random colour pattern (h, w, 3) uint8, on which
    augmentations act visibly."""
    return _smooth_image


@pytest.fixture(scope="session")
def write_images() -> Callable[..., list[Path]]:
    """write_images(folder, count, seed=0): real image files cycling through IMAGE_KINDS
    (grey, RGBA, CMYK, several sizes and formats)."""
    return _write_images


@pytest.fixture(scope="session")
def labelled_folder() -> Callable[..., Path]:
    """labelled_folder(root, per_class=6): root/{train,val}/{cat,dog}/* with two splits."""

    def make(root: Path, per_class: int = 6) -> Path:
        for split, n in (("train", per_class), ("val", 2)):
            for c, cls in enumerate(("cat", "dog")):
                _write_images(root / split / cls, n, seed=10 * c + (split == "val"))
        return root

    return make


@pytest.fixture(scope="session")
def truncated_jpeg() -> Callable[[Path], Path]:
    """truncated_jpeg(path): a JPEG cut after 30% of its bytes (every crop of >= 10% of the
    area needs lost rows)."""

    def make(path: Path) -> Path:
        full = path.with_suffix(".full.jpg")
        Image.fromarray(_smooth_image(99, (200, 150))).save(full, quality=95)
        data = full.read_bytes()
        full.unlink()
        path.write_bytes(data[: int(0.3 * len(data))])
        return path

    return make


@pytest.fixture(scope="session")
def folder_config(tfds_dir) -> Callable[..., ml_collections.ConfigDict]:
    """folder_config(root, **overrides): tiny_config reading the image folder at `root`."""
    return lambda root, **overrides: _tiny_config(tfds_dir, dataset=f"folder:{root}",
                                                  **overrides)


@pytest.fixture(scope="session")
def sharded_digits(tmp_path_factory) -> str:
    """A data_dir with the embedded digits prepared in 4 TFRecord shards per split (the
    streaming tests)."""
    import tensorflow_datasets as tfds

    from simclr_jax.data import digits  # noqa: F401  (registers the builder)

    data_dir = str(tmp_path_factory.mktemp("sharded_digits"))
    builder = tfds.builder("sklearn_digits", data_dir=data_dir)
    tfds.disable_progress_bar()
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(num_shards=4))
    return data_dir


# ---- Official SimCLR facts ---------------------------------------------------------------------

OFFICIAL = ROOT / "tests" / "fixtures" / "official_simclr"


def _official_listing(name: str) -> dict[str, tuple[int, ...]]:
    rows = (OFFICIAL / name).read_text().splitlines()[1:]
    out = {}
    for row in rows:
        var, _, shape = row.partition("\t")
        out[var] = tuple(int(d) for d in shape.split("x")) if shape not in ("", "scalar") else ()
    return out


@pytest.fixture(scope="session")
def official_listing() -> Callable[[str], dict[str, tuple[int, ...]]]:
    """official_listing(file): {variable name: shape} of a listing in
    tests/fixtures/official_simclr/ (variables written by the official code; see its README)."""
    return _official_listing


# ---- Evaluation --------------------------------------------------------------------------------

def _made_once(tmp_path_factory, name: str, make: Callable[[Path], None]) -> Path:
    """<shared tmp>/name, made by `make(path)` once for the whole test session: with
    pytest-xdist its workers share it (the first makes it under a file lock, the others wait)."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # this session's directory, above each worker's own
    path, done = base / name, base / f"{name}.done"
    with open(base / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            shutil.rmtree(path, ignore_errors=True)  # a half-made one (a worker that crashed)
            path.mkdir()
            make(path)
            done.touch()
    return path


@pytest.fixture(scope="session")
def made_once(tmp_path_factory) -> Callable[[str, Callable[[Path], None]], Path]:
    """made_once(name, make): <shared tmp>/name, made by `make(path)` once for the whole test
    session and shared by the xdist workers (read it; copy it to change it)."""
    return lambda name, make: _made_once(tmp_path_factory, name, make)


@pytest.fixture(scope="session")
def shared_dir(tmp_path_factory) -> Callable[[str], Path]:
    """shared_dir(name): <shared tmp>/name, one directory for the whole session that the xdist
    workers share (e.g. a compilation cache for the jobs of several tests)."""
    def make(name: str) -> Path:
        base = tmp_path_factory.getbasetemp()
        if os.environ.get("PYTEST_XDIST_WORKER"):
            base = base.parent
        (base / name).mkdir(exist_ok=True)
        return base / name

    return make


@pytest.fixture(scope="session")
def pretrained_run(tmp_path_factory, tfds_dir) -> str:
    """Workdir of a 4-step tiny pretraining (checkpoints 2 and 4), made once per session and
    shared by the xdist workers (read it; copy it to change it).

    Written on the 8 simulated devices of the test session, so restoring it elsewhere with
    fewer devices exercises cross-device-count restore. Its kNN monitor logs at steps 2 and 4.
    """
    from simclr_jax.core import train
    from simclr_jax.evals import monitor

    def make(workdir: Path) -> None:
        train.train_and_evaluate(_tiny_config(tfds_dir, knn_every_steps=2), str(workdir),
                                 monitor=monitor.Monitor)

    return str(_made_once(tmp_path_factory, "pretrained", make))


@pytest.fixture(scope="session")
def tiny_eval_config() -> Callable[..., ml_collections.ConfigDict]:
    """tiny_eval_config(pretrained, job='linear_eval', **overrides): the job's digits default,
    shrunk to a few steps."""
    from simclr_jax import eval_config

    def make(pretrained: str, job: str = "linear_eval", **overrides):
        c = eval_config.get_config(job)
        c.pretrained = pretrained
        c.batch_size = 32
        c.eval_batch_size = 64
        c.num_train_steps = 6
        c.log_every_steps = 3
        c.update(overrides)
        return c

    return make


# ---- Scheduling --------------------------------------------------------------------------------

def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Longest first (`@pytest.mark.slow(seconds)`), the rest in their usual order: each xdist
    worker takes the next test when it is free (--maxschedchunk=1), so the long tests overlap
    with each other and the short ones fill in, instead of one long test ending the run on one
    worker while the other waits."""
    def expected_seconds(item: pytest.Item) -> float:
        marker = item.get_closest_marker("slow")
        return marker.args[0] if marker else 0.0

    items.sort(key=expected_seconds, reverse=True)  # stable: the rest keep their order
