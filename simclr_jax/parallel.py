"""Device mesh, shardings, global batches and multi-process start-up."""

import collections
import os
from collections.abc import Iterable, Iterator

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from simclr_jax.errors import UserError

DATA_AXIS = "data"


def make_mesh(devices=None) -> Mesh:
    """1-D data-parallel mesh over all devices (Auto axis types).

    Devices are ordered by (process, id) so that each process's rows of the global batch are one
    contiguous block: example i of the global batch then has the same global index whatever
    the process/device layout, which is what keys its augmentation.
    """
    devices = devices if devices is not None else jax.devices()
    devices = sorted(devices, key=lambda d: (d.process_index, d.id))
    # Explicit axis types (make_mesh's default) break Flax convolutions and z @ z.T.
    return Mesh(np.array(devices), (DATA_AXIS,), axis_types=(jax.sharding.AxisType.Auto,))


def replicated(mesh: Mesh) -> NamedSharding:
    """Sharding of parameters and optimiser state: a full copy on every device."""
    return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    """Sharding of batches: leading axis split over the data axis."""
    return NamedSharding(mesh, P(DATA_AXIS))


def check_global_batch(batch_size: int, mesh: Mesh) -> None:
    """The global batch must split evenly over devices and processes."""
    n = mesh.devices.size
    if batch_size % n:
        lower, upper = (batch_size // n) * n, (batch_size // n + 1) * n
        raise UserError(
            f"global batch size {batch_size} (config.batch_size) is not divisible by the "
            f"{n} devices; use a multiple of {n}, e.g. {lower or upper} or {upper}")


def global_batch(mesh: Mesh, local: dict[str, np.ndarray]) -> dict[str, jax.Array]:
    """Assembles each process's rows into batch-sharded global arrays."""
    sharding = batch_sharded(mesh)
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local.items()}


def prefetch_to_mesh(local_batches: Iterable[dict[str, np.ndarray]], mesh: Mesh,
                     size: int = 2, drop: tuple[str, ...] = ()) -> Iterator[dict[str, jax.Array]]:
    """Keeps `size` global batches in flight, so host->device copies overlap the step."""
    queue: collections.deque = collections.deque()
    for local in local_batches:
        queue.append(global_batch(mesh, {k: v for k, v in local.items() if k not in drop}))
        if len(queue) == size:
            yield queue.popleft()
    while queue:
        yield queue.popleft()


def in_cluster() -> bool:
    """True in a multi-process launch that jax.distributed.initialize() detects on its own:
    a multi-host Cloud TPU slice, SLURM or Open MPI with more than one task."""
    hosts = os.environ.get("TPU_WORKER_HOSTNAMES", "")
    return ("," in hosts or int(os.environ.get("SLURM_NTASKS", "1")) > 1
            or int(os.environ.get("OMPI_COMM_WORLD_SIZE", "1")) > 1)


def initialize_distributed(coordinator_address: str | None, num_processes: int | None,
                           process_id: int | None) -> None:
    """jax.distributed.initialize when running multi-process; no-op for a single process.

    On Cloud TPU pods (and SLURM / Open MPI clusters) every argument is auto-detected; the flags
    are for other clusters and local multi-process tests.
    """
    if num_processes is not None and process_id is not None and not (
            0 <= process_id < num_processes):
        raise UserError(f"--process_id={process_id} is out of range for "
                        f"--num_processes={num_processes}: use 0..{num_processes - 1}")
    if coordinator_address or num_processes or in_cluster():
        jax.distributed.initialize(coordinator_address=coordinator_address,
                                   num_processes=num_processes, process_id=process_id)
