"""Builds and loads the oneDNN convolution handlers (onednn_conv.cc) for conv_impl='onednn'.

oneDNN comes from PyPI (`onednn-cpu-gomp` and `onednn-devel-cpu-gomp`, in requirements.txt on
x86-64 Linux): a prebuilt library and its headers, no Python binding. JAX's FFI headers ship with
jaxlib. What joins them is one small C++ file, compiled here on first use (about 3 s with g++)
into a per-user cache keyed by everything that goes into it, so a changed source, jaxlib or
oneDNN gets a fresh build and concurrent first uses (test workers, several processes of a job)
never see a half-written library. No package builds and registers XLA FFI handlers for an
arbitrary shared library, hence these lines.
"""

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import site
import subprocess
import sys
import tempfile
from pathlib import Path

import jax
import jaxlib

SOURCE = Path(__file__).with_name("onednn_conv.cc")
# The handlers the source defines, by the XLA FFI target names they are registered under.
TARGETS = {
    "simclr_onednn_conv_forward": "SimclrOnednnConvForward",
    "simclr_onednn_conv_backward_data": "SimclrOnednnConvBackwardData",
    "simclr_onednn_conv_backward_weights": "SimclrOnednnConvBackwardWeights",
}
_LIBRARY = "libdnnl.so.3"
_HEADER = Path("include/oneapi/dnnl/dnnl.hpp")
_INSTALL_HINT = ("pip install onednn-cpu-gomp==2023.2.0 onednn-devel-cpu-gomp==2023.2.0 "
                 "(requirements.txt does on x86-64 Linux), or set config.conv_impl=winograd")


class OneDnnUnavailable(RuntimeError):
    """The oneDNN convolutions cannot be built or loaded here; the message says why."""


def _onednn_root() -> tuple[Path, Path]:
    """(include dir, library dir) of an installed oneDNN: $ONEDNN_ROOT, this environment's
    prefix (where the PyPI wheels put it), the user's site base, then the system."""
    roots = [os.environ.get("ONEDNN_ROOT"), sys.prefix, sys.base_prefix, site.getuserbase(),
             "/usr/local", "/usr"]
    for root in filter(None, roots):
        root = Path(root)
        if not (root / _HEADER).is_file():
            continue
        for lib in ("lib", "lib64", "lib/x86_64-linux-gnu"):
            if (root / lib / _LIBRARY).is_file():
                return root / "include", root / lib
    raise OneDnnUnavailable(f"no oneDNN 3 ({_HEADER} and {_LIBRARY}) under {roots}; "
                            f"{_INSTALL_HINT}")


def cache_dir() -> Path:
    """$SIMCLR_JAX_CACHE, else $XDG_CACHE_HOME/simclr_jax, else ~/.cache/simclr_jax."""
    if os.environ.get("SIMCLR_JAX_CACHE"):
        return Path(os.environ["SIMCLR_JAX_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "simclr_jax"


def _compile(compiler: str, include: Path, lib: Path, out: Path) -> None:
    command = [compiler, "-O2", "-std=c++17", "-shared", "-fPIC", "-fopenmp",
               "-isystem", jax.ffi.include_dir(), "-isystem", str(include), str(SOURCE),
               "-o", str(out), f"-L{lib}", f"-l:{_LIBRARY}", f"-Wl,-rpath,{lib}"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise OneDnnUnavailable(f"compiling {SOURCE.name} failed: {e}") from e
    if done.returncode:
        raise OneDnnUnavailable(f"compiling {SOURCE.name} failed ({' '.join(command)}):\n"
                                f"{done.stderr[-2000:]}")


def build() -> Path:
    """The compiled handler library, built into cache_dir() unless already there."""
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        raise OneDnnUnavailable(f"the oneDNN convolutions are built for x86-64 Linux only, "
                                f"not {platform.system()} {platform.machine()}; "
                                f"set config.conv_impl=winograd")
    include, lib = _onednn_root()
    compiler = os.environ.get("CXX", "g++")
    if shutil.which(compiler) is None:
        raise OneDnnUnavailable(f"no C++ compiler {compiler!r} (set $CXX) to build "
                                f"{SOURCE.name}; or set config.conv_impl=winograd")
    try:
        source = SOURCE.read_bytes()
    except OSError as e:
        raise OneDnnUnavailable(
            f"the C++ source {SOURCE} is not installed ({e.strerror}): the package was built "
            f"without its package data; reinstall simclr_jax from a wheel of this version "
            f"(pip install .), or set config.conv_impl=winograd") from e
    key = hashlib.sha256()
    for part in (source, jaxlib.__version__.encode(), str(lib).encode(),
                 compiler.encode(), (lib / _LIBRARY).resolve().name.encode()):
        key.update(part)
    out = cache_dir() / f"onednn_conv-{key.hexdigest()[:16]}.so"
    if not out.is_file():
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OneDnnUnavailable(f"cannot create the build cache {out.parent} ({e}); set "
                                    f"$SIMCLR_JAX_CACHE to a writable directory") from e
        # Built under a temporary name, then renamed: atomic for concurrent builders.
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)
        os.close(fd)
        try:
            _compile(compiler, include, lib, Path(tmp))
            os.replace(tmp, out)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return out


@functools.cache
def load() -> None:
    """Builds (once per cache) and registers the handlers with XLA's CPU backend (once per
    process). Raises OneDnnUnavailable with the reason where it cannot."""
    path = build()
    try:
        library = ctypes.CDLL(str(path))
    except OSError as e:
        raise OneDnnUnavailable(f"loading {path} failed: {e}; {_INSTALL_HINT}") from e
    for target, symbol in TARGETS.items():
        jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(library, symbol)),
                                    platform="cpu")
