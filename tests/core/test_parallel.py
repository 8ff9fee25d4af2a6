"""core/parallel.py: programs compiled to run once; when JAX's cluster detection starts
multi-process JAX."""

from functools import partial

import jax
import numpy as np
import pytest

from simclr_jax.core import optim, parallel, train
from simclr_jax.models import build_model


def test_run_once_gives_the_bits_of_the_default_compile(tiny_config):
    """The CPU init compile (O2) must not change a single initial value: a run's parameters
    are a function of its seed, whatever compiled them."""
    config = tiny_config()
    model = build_model(config, num_classes=10)
    tx = optim.build_optimizer(config, optim.learning_rate_schedule(config, 10, 100))
    init = partial(train.create_train_state, model, tx, image_size=config.image_size)
    key = jax.random.PRNGKey(3)
    fast = parallel.run_once(init, key)
    default = jax.jit(init)(key)
    leaves = jax.tree_util.tree_leaves(default)
    assert len(leaves) > 50
    for a, b in zip(leaves, jax.tree_util.tree_leaves(fast), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


COORDINATOR_ARGS = {"coordinator_address", "num_processes", "process_id"}


@pytest.fixture
def initialize_calls(monkeypatch) -> list[tuple[tuple, dict]]:
    """The calls jax.distributed.initialize receives (recorded; nothing starts)."""
    calls: list[tuple[tuple, dict]] = []
    monkeypatch.setattr(jax.distributed, "initialize", lambda *a, **kw: calls.append((a, kw)))
    return calls


def test_a_gcloud_tpu_pod_slice_starts_multi_process_jax(tpu_vm, initialize_calls):
    """Worker 1 of a 4-host slice made by `gcloud compute tpus tpu-vm create` (metadata only,
    no TPU_WORKER_HOSTNAMES): the job calls jax.distributed.initialize() and leaves every
    coordinator argument to JAX, which reads them from the metadata."""
    from jax._src import clusters

    hosts = ["10.130.0.2", "10.130.0.3", "10.130.0.4", "10.130.0.5"]
    tpu_vm(hosts, worker=1)
    parallel.initialize_distributed(None, None, None, timeout_s=30)
    assert len(initialize_calls) == 1, initialize_calls
    args, kwargs = initialize_calls[0]
    assert args == () and not COORDINATOR_ARGS & kwargs.keys(), initialize_calls
    # What JAX then fills in from the simulated metadata: worker 0 coordinates, 4 processes.
    detected = clusters.ClusterEnv.auto_detect_unset_distributed_params(
        None, None, None, None, None, 30)
    assert detected[:3] == ("10.130.0.2:8482", 4, 1)


def test_a_single_host_tpu_vm_stays_one_process(tpu_vm, initialize_calls):
    """A single-host TPU VM is detected too, but one process needs no distributed client
    (JAX runs it without one, as before)."""
    tpu_vm(["10.130.0.2"], worker=0)
    parallel.initialize_distributed(None, None, None, timeout_s=30)
    assert initialize_calls == []


def test_a_failing_cluster_probe_runs_one_process(tpu_vm, initialize_calls, metadata_server,
                                                   monkeypatch, caplog):
    """A TPU VM whose metadata JAX cannot parse (its probe raises): one process, as before,
    with a warning naming the flags, instead of a crash before the job starts."""
    monkeypatch.setenv("GCE_METADATA_IP", metadata_server({
        "agent-worker-number": "0", "worker-network-endpoints": "w-0:10.0.0.2,w-1:10.0.0.3"}))
    parallel.initialize_distributed(None, None, None, timeout_s=30)
    assert initialize_calls == []
    assert "cluster detection failed (ValueError" in caplog.text, caplog.text
    assert "--coordinator_address" in caplog.text
