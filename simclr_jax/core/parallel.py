"""Device mesh, shardings, global batches and multi-process start-up."""

import collections
import os
import socket
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

import jax
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from simclr_jax.errors import UserError

DATA_AXIS = "data"
T = TypeVar("T")


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


# Initialisers are run once, and XLA:CPU spends most of their compile in LLVM's O3 passes over
# the unrolled threefry of every parameter (ResNet-18 at 1/8 width: 15 s at O3, 4 s at O2, the
# same bits; measured). So on CPU they are compiled at O2; other backends compile them as usual.
_RUN_ONCE_CPU_OPTIONS = {"xla_backend_optimization_level": 2}


def run_once(fn: Callable, *args, out_shardings=None):
    """`jax.jit(fn, out_shardings=...)(*args)` for a program that runs once (initialisation)."""
    jitted = jax.jit(fn, out_shardings=out_shardings)
    if jax.default_backend() != "cpu":
        return jitted(*args)
    return jitted.lower(*args).compile(compiler_options=_RUN_ONCE_CPU_OPTIONS)(*args)


def check_global_batch(batch_size: int, mesh: Mesh, key: str = "batch_size") -> None:
    """The global batch (config.`key`) must split evenly over devices and processes."""
    n = mesh.devices.size
    if batch_size % n:
        lower, upper = (batch_size // n) * n, (batch_size // n + 1) * n
        suggestion = f"{lower} or {upper}" if lower else f"{upper}"
        raise UserError(
            f"global batch size {batch_size} (config.{key}) is not divisible by the "
            f"{n} devices; use a multiple of {n}, e.g. {suggestion}")


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


def settled(out):
    """`out`, computed: on XLA:CPU, block until its program finished; elsewhere `out` as it is.

    With the simulated CPU devices, two collective programs in flight at once (the classifier
    step and the next feature-bank gather, each with a reduction over the devices) were seen to
    miss the in-process rendezvous (one device of 8 never arrived within its 40 s) and abort the
    process (tests/evals/test_quality.py, loaded 2-core host). One program at a time costs the
    CPU little: its devices share the same cores. TPU/GPU keep the asynchronous dispatch.
    """
    if jax.default_backend() == "cpu":
        return jax.block_until_ready(out)
    return out


def compile_then_meet(step_fn: Callable, state, batches: Iterator[dict]) -> Iterator[dict]:
    """`batches`, after every process has compiled `step_fn(state, first batch)`.

    Multi-process on CPU/GPU, the first collective of a program gives up (gloo: after 30 s) if
    a peer is still compiling, which a loaded host easily is. So each process compiles ahead
    (jit reuses the executable on the first call) and all meet at a barrier before step one.
    """
    batches = iter(batches)
    first = next(batches, None)
    if first is None:
        return
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        step_fn.lower(state, first).compile()
        multihost_utils.sync_global_devices("simclr_jax.compiled")
    yield first
    yield from batches


def detected_cluster() -> type | None:
    """The cluster environment jax.distributed.initialize() would detect on its own, or None.

    JAX's own detection (its ClusterEnv subclasses, in JAX's order, opt-in ones left out), not a
    list of variables of ours: a TPU VM created with gcloud is recognised from its GCE metadata
    (GceTpuCluster), GKE from TPU_WORKER_HOSTNAMES, SLURM and Open MPI from their launchers'
    variables. Off a TPU VM and outside those launchers this reads a few variables only.
    """
    from jax._src import clusters

    return next((env for env in clusters.ClusterEnv._cluster_types
                 if not env.opt_in_only_method and env.is_env_present()), None)


def in_cluster() -> bool:
    """True in a multi-process launch that jax.distributed.initialize() detects on its own.

    A detected environment with a single process (a single-host TPU VM, a one-task SLURM job)
    does not count: JAX runs one process without a distributed client (as before), and on
    SLURM an initialize() would restrict that process to one GPU (SLURM_LOCALID). Where the
    probe itself fails (a Kubernetes pod that is no Job, an unreachable metadata server), the
    job runs as one process and says why.
    """
    try:
        env = detected_cluster()
        return env is not None and env.get_process_count() > 1
    except Exception as e:  # JAX's probes raise whatever their clients raise
        logging.warning("JAX's cluster detection failed (%s: %s); running as one process. For "
                        "a multi-process job pass --coordinator_address=HOST:PORT of process 0, "
                        "--num_processes and --process_id to every process.",
                        type(e).__name__, e)
        return False


def multi_process(coordinator_address: str | None, num_processes: int | None) -> bool:
    """True if these flags (or the cluster's environment) ask for a multi-process job."""
    return bool(coordinator_address or num_processes or in_cluster())


def check_process_flags(coordinator_address: str | None, num_processes: int | None,
                        process_id: int | None) -> None:
    """UserError for multi-process flags that cannot describe a job."""
    if num_processes is not None and process_id is not None and not (
            0 <= process_id < num_processes):
        raise UserError(f"--process_id={process_id} is out of range for "
                        f"--num_processes={num_processes}: use 0..{num_processes - 1}")
    if process_id is not None and not multi_process(coordinator_address, num_processes):
        raise UserError(f"--process_id={process_id} needs --num_processes and "
                        f"--coordinator_address (host:port of process 0)")


def initialize_distributed(coordinator_address: str | None, num_processes: int | None,
                           process_id: int | None, timeout_s: int = 300,
                           heartbeat_timeout_s: int = 100) -> None:
    """jax.distributed.initialize when running multi-process; no-op for a single process.

    On Cloud TPU VMs and pod slices (gcloud or GKE), SLURM and Open MPI clusters every argument
    is auto-detected by JAX (in_cluster); the flags are for other clusters and local
    multi-process tests. If the processes have not all met at the coordinator within
    `timeout_s`, the job ends with one `error:` line and exit code 2. A process that stops
    sending heartbeats for `heartbeat_timeout_s` counts as lost: JAX then ends all the others
    (core/supervise.py turns that into one error line).
    """
    check_process_flags(coordinator_address, num_processes, process_id)
    if not multi_process(coordinator_address, num_processes):
        return
    # Only what the flags give: JAX's cluster detection fills in the rest.
    given = {k: v for k, v in (("coordinator_address", coordinator_address),
                               ("num_processes", num_processes),
                               ("process_id", process_id)) if v is not None}
    # When the processes cannot meet, JAX aborts the whole process from C++ (no Python
    # exception to catch), so a watchdog thread reports it first, naming what to check.
    watchdog = threading.Timer(timeout_s, _coordinator_timeout,
                               (coordinator_address, num_processes, process_id, timeout_s))
    watchdog.daemon = True
    watchdog.start()
    try:
        jax.distributed.initialize(**given, initialization_timeout=timeout_s + 60,
                                   heartbeat_timeout_seconds=heartbeat_timeout_s)
    except (RuntimeError, ValueError) as e:
        raise UserError(f"could not start multi-process JAX ({e}): outside Cloud TPU, SLURM "
                        f"and Open MPI pass --coordinator_address=HOST:PORT of process 0, "
                        f"--num_processes and --process_id to every process") from None
    finally:
        watchdog.cancel()


def _accepts_connections(address: str) -> bool:
    """True if something listens at host:port (the coordinator's gRPC server, normally)."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=2):
            return True
    except (OSError, ValueError):
        return False


def _coordinator_timeout(address: str | None, num_processes: int | None,
                         process_id: int | None, timeout_s: int) -> None:
    """Watchdog of initialize_distributed: one clear error line, then exit code 2."""
    where = address or "the auto-detected coordinator address"
    if process_id != 0 and address and not _accepts_connections(address):
        problem = (f"nothing accepts connections at {address} (--coordinator_address): start "
                   f"process 0 on that host with the same --coordinator_address, and check "
                   f"that the host name and port are right and open between the hosts")
    else:
        problem = (f"start all {num_processes or 'the'} processes with the same "
                   f"--coordinator_address and --num_processes, each with its own --process_id "
                   f"(0 runs the coordinator), and check that the port is open between the "
                   f"hosts")
    print(f"error: the processes did not all connect to the coordinator at {where} within "
          f"{timeout_s} s (--distributed_timeout): {problem}", file=sys.stderr, flush=True)
    os._exit(2)  # the main thread is stuck in C++; nothing has been written yet


def process_0_first(fn: Callable[[], T]) -> T:
    """fn() on process 0, then on the others: for first uses that write shared files (such as
    preparing an embedded dataset in a shared data_dir)."""
    if jax.process_count() == 1:
        return fn()
    from jax.experimental import multihost_utils

    if jax.process_index() == 0:
        try:
            return fn()
        finally:
            # Also when fn fails: the others then run it and fail the same way, not hang.
            multihost_utils.sync_global_devices("simclr_jax.process_0_first")
    multihost_utils.sync_global_devices("simclr_jax.process_0_first")
    return fn()
