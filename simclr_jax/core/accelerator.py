"""Which accelerator a job runs on: one log line naming it, and a refusal to train on the CPU
when the launcher asked for GPUs or TPUs.

Without its CUDA (or TPU) build, or when that build cannot open the chips, JAX falls back to the
CPU with a single warning; the job would then compile CPU kernels and crawl for days. The
launchers (launch/gpu.sh, launch/tpu.sh) export REQUIRE_ENV naming the backend they expect.
"""

import os

import jax

from simclr_jax.errors import UserError

REQUIRE_ENV = "SIMCLR_JAX_REQUIRE_BACKEND"
_BACKENDS = ("gpu", "tpu", "cpu")
_FIX = {
    "gpu": ("JAX's CUDA build is missing or sees no GPU: install it with `pip install "
            "\"jax[cuda12]=={version}\"` (or cuda13 for a CUDA 13 driver; `launch/gpu.sh "
            "install` does it) and check that `nvidia-smi` lists the GPUs"),
    "tpu": ("JAX's TPU build is missing or cannot open the chips: install it with `pip install "
            "\"jax[tpu]=={version}\"` (`launch/tpu.sh setup` does it) and check that no other "
            "process holds the TPU"),
    "cpu": "set JAX_PLATFORMS=cpu to keep JAX off the accelerators",
}


def describe() -> str:
    """One line: the backend, the devices and processes of the job, and this process's index."""
    kind = jax.devices()[0].device_kind
    return (f"JAX {jax.__version__}: {jax.default_backend()} backend ({kind}), "
            f"{jax.device_count()} devices in {jax.process_count()} processes, "
            f"{jax.local_device_count()} here (process {jax.process_index()})")


def check_required() -> None:
    """Stops the job (UserError) if REQUIRE_ENV names a backend JAX is not running on.

    Empty or unset: no requirement (the override for running on the CPU on purpose).
    """
    required = os.environ.get(REQUIRE_ENV, "").strip().lower()
    if not required:
        return
    if required not in _BACKENDS:
        raise UserError(f"{REQUIRE_ENV}={required} is not a backend: use one of "
                        f"{', '.join(_BACKENDS)}, or leave it empty for no requirement")
    actual = jax.default_backend()
    if actual != required:
        fix = _FIX[required].format(version=jax.__version__)
        raise UserError(f"{REQUIRE_ENV}={required} (set by the launcher) but JAX's backend is "
                        f"{actual}: {fix}; to run on the {actual} anyway, set {REQUIRE_ENV}= "
                        f"(empty)")
