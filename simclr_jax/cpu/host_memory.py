"""CPU jobs: each step reuses the previous step's scratch memory instead of faulting in fresh.

XLA:CPU mallocs every execution's temporary buffer (1.2 GB for the width-1/4 CIFAR step at
B=256) and frees it after. glibc serves a block that large with a fresh mmap. The kernel then
faults in and zeroes every page on first touch: 296k page faults and ~0.7 s of system CPU per
2 s step, measured on the 2-core dev machine. glibc can keep such a block for reuse only in its
main heap. Thread arenas hold at most 64 MiB and mmap anything larger, whatever mallopt says.
With JAX's default async dispatch the executable allocates on a worker thread.

So a job on the CPU backend does two things:
- It runs single-device computations on the calling thread
  (`jax_cpu_enable_async_dispatch=False`, read when the CPU client starts).
- It turns mmap and trimming off for glibc's main heap (`mallopt`), so the freed buffer
  becomes the next step's.

The width-1/4 step then has no page faults and runs 15-20% faster (README, Performance). The
costs: freed host memory stays with the process (its resident size holds its peak), and the
host's Python work no longer overlaps a single-device step. Setting
JAX_CPU_ENABLE_ASYNC_DISPATCH=true keeps JAX's and glibc's defaults. PyTorch and TensorFlow
users preload tcmalloc or jemalloc for the same reason. Nothing a job can import does this,
hence these few lines.
"""

import ctypes
import os

import jax

# From glibc's <malloc.h>.
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_ASYNC = "jax_cpu_enable_async_dispatch"
_OPT_OUT = _ASYNC.upper()  # the environment variable JAX reads the option from


def backend_started() -> bool:
    """Whether a JAX backend has started (and so read its options and XLA_FLAGS)."""
    # No public API says so (jax._src); where it is gone, assume not started (jobs call this
    # first thing, so only a job run inside another JAX program would be wrong).
    try:
        from jax._src import xla_bridge
    except ImportError:
        return False
    started = getattr(xla_bridge, "backends_are_initialized", None)
    return bool(started and started())


def run_cpu_steps_inline() -> bool:
    """Before the backend starts: the CPU client runs single-device computations on the
    calling thread, unless JAX_CPU_ENABLE_ASYNC_DISPATCH is set. Returns whether it does
    (False too where a backend had started: the client has read the option already)."""
    if backend_started():
        return False
    if _OPT_OUT not in os.environ:
        jax.config.update(_ASYNC, False)
    return not jax.config.read(_ASYNC)


def keep_freed_host_memory(inline: bool) -> bool:
    """On the CPU backend with inline steps (`inline`: what run_cpu_steps_inline returned):
    glibc's main heap serves large blocks itself (no mmap) and never trims, so a freed step
    buffer is the next one's. Starts the backend: call it after jax.distributed.initialize.
    Returns whether it did (False elsewhere, and without glibc)."""
    if not inline or jax.default_backend() != "cpu":
        return False
    # The process's own symbols: libc's mallopt where libc is glibc (musl, macOS: none).
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is None:
        return False
    # -1 turns trimming off (documented in mallopt(3)); mallopt returns 1 on success.
    return mallopt(_M_MMAP_MAX, 0) == 1 and mallopt(_M_TRIM_THRESHOLD, -1) == 1
