"""The project as users install it: a wheel built from the checkout, installed outside the source
tree, runs the default pretraining job from another directory, oneDNN's convolutions included.

The suite otherwise imports the editable checkout, which reads files straight from the source
tree, so a file the package needs at run time but the wheel leaves out is only seen here.
"""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from simclr_jax.cpu import onednn

ROOT = Path(__file__).resolve().parents[1]


def _not_source(folder: str, names: list[str]) -> set[str]:
    """What a build does not read: caches, the checkout's environment, runs and the tests."""
    top = Path(folder) == ROOT
    return {n for n in names if n in ("__pycache__", ".pytest_cache", ".ruff_cache")
            or n.endswith(".egg-info")
            or (top and (n.startswith(("workdir", ".")) or n in ("runs", "build", "dist",
                                                                   "tests")))}


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A site directory holding only the wheel of this checkout (dependencies come from the
    running environment, as `pip install --no-deps` into it would)."""
    base = tmp_path_factory.mktemp("wheel")
    # A copy of the tree keeps the build's egg-info and build/ out of the checkout.
    build = base / "src"
    shutil.copytree(ROOT, build, ignore=_not_source)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    # --no-build-isolation: the environment's setuptools, no download.
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(base / "dist"),
                    str(build)], check=True, capture_output=True, timeout=300)
    (wheel,) = (base / "dist").glob("simclr_jax-*.whl")
    site = base / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    return site


def _package_files() -> set[str]:
    """Every file of the package's source tree that is not Python (nor Python's cache)."""
    return {p.relative_to(ROOT).as_posix() for p in (ROOT / "simclr_jax").rglob("*")
            if p.is_file() and p.suffix not in (".py", ".pyc")}


def test_the_wheel_ships_every_file_of_the_package(installed):
    (wheel,) = installed.parent.glob("dist/simclr_jax-*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    missing = {n for n in _package_files() if n not in shipped}
    assert "simclr_jax/cpu/onednn_conv.cc" in shipped and not missing, sorted(missing)


def _run_installed(site: Path, cwd: Path, *flags: str, env: dict | None = None):
    full_env = dict(os.environ, PYTHONPATH=str(site), SIMCLR_JAX_CACHE=str(cwd / "build-cache"),
                    XLA_FLAGS="--xla_force_host_platform_device_count=1", **(env or {}))
    return subprocess.run([sys.executable, "-m", "simclr_jax.pretrain", *flags], cwd=cwd,
                          env=full_env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow(50)
def test_the_installed_wheel_runs_the_default_job_from_elsewhere(installed, tmp_path):
    """The CPU default, conv_impl=auto: oneDNN's convolutions built from the wheel's own source
    where the checkout builds them (what conv_impl=onednn runs too: cpu.conv_class), else the
    Winograd fallback."""
    where = subprocess.run([sys.executable, "-c", "import simclr_jax; print(simclr_jax.__file__)"],
                           cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(installed)),
                           capture_output=True, text=True, check=True).stdout.strip()
    assert Path(where).is_relative_to(installed), where  # the wheel, not the checkout
    result = _run_installed(installed, tmp_path, "--workdir=run", "--config.num_train_steps=2",
                            "--config.conv_impl=auto", "--config.knn_every_steps=0")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert (tmp_path / "run" / "checkpoints" / "2").is_dir()
    if onednn.unavailable_reason() is None:  # where the checkout builds it, so must the wheel
        assert "unavailable" not in output, output[-3000:]  # auto ran oneDNN, no fallback
        assert list((tmp_path / "build-cache").glob("onednn_conv-*.so")), "oneDNN not built"
