"""Several CPU devices in one process: XLA's default schedule can deadlock a step.

With simulated CPU devices (`--xla_force_host_platform_device_count=N`, how users debug the
data-parallel step on a laptop), XLA:CPU runs every device's computation in one process, and
an all-reduce waits until all N devices arrive. Under XLA:CPU's concurrency-optimised
scheduler (its default) the full-width ResNet-18 CIFAR step can deadlock: the devices wait in
different all-reduces until XLA aborts the process (`Termination timeout for all reduce ...`;
the measurements are in docs/failure_modes.md). With that scheduler off the same step runs, so a
job turns it off where one process drives several CPU devices; one device, TPU and GPU are
left as they are. An explicit setting of the flag in
XLA_FLAGS wins. No JAX or XLA option says "order the collectives", hence this.
"""

import os
import re

from simclr_jax.cpu.host_memory import backend_started

SCHEDULER_FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler"
_DEVICE_COUNT = re.compile(r"--xla_force_host_platform_device_count=(\d+)")


def ordered_collectives_flags(xla_flags: str, num_cpu_devices: int = 0) -> str | None:
    """XLA_FLAGS with the concurrency-optimised scheduler off, where they (or
    `num_cpu_devices`, JAX's `jax_num_cpu_devices`) ask for several CPU devices and do not set
    the scheduler themselves; None where nothing needs to change."""
    counts = [int(n) for n in _DEVICE_COUNT.findall(xla_flags)]
    devices = counts[-1] if counts else num_cpu_devices  # XLA takes a flag's last value
    if devices <= 1 or SCHEDULER_FLAG in xla_flags:
        return None
    return f"{xla_flags} {SCHEDULER_FLAG}=false".strip()


def keep_collectives_in_order() -> bool:
    """Before the backend starts (XLA reads XLA_FLAGS then): with several CPU devices in this
    process, their all-reduces in one order (the module docstring). Returns whether it
    changed XLA_FLAGS (False too where a backend had started: too late to change them)."""
    if backend_started():
        return False
    import jax

    flags = ordered_collectives_flags(os.environ.get("XLA_FLAGS", ""),
                                      int(jax.config.jax_num_cpu_devices or 0))
    if flags is None:
        return False
    os.environ["XLA_FLAGS"] = flags
    return True
