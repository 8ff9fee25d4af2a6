"""Fixtures of the core tests: the independent numpy references of the loss tests, and a
simulated Cloud TPU VM for JAX's cluster detection."""

import http.server
import os
import threading
from collections.abc import Callable, Iterator

import numpy as np
import pytest


def _naive_nt_xent(z1: np.ndarray, z2: np.ndarray, tau: float) -> float:
    """Textbook NT-Xent: views interleaved 2k, 2k+1; loop over all 2N anchors."""
    z = np.empty((2 * len(z1), z1.shape[1]), np.float64)
    z[0::2], z[1::2] = z1, z2
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    total = 0.0
    for i in range(len(z)):
        j = i + 1 if i % 2 == 0 else i - 1
        sims = np.array([z[i] @ z[k] / tau for k in range(len(z))])
        denominator = sum(np.exp(sims[k]) for k in range(len(z)) if k != i)
        total += -np.log(np.exp(sims[j]) / denominator)
    return total / len(z)


def _official_nt_xent(z1: np.ndarray, z2: np.ndarray, tau: float) -> dict[str, float]:
    """The official add_contrastive_loss (objective.py) transcribed to float64 numpy, one
    replica: hidden1 = view 1, hidden2 = view 2, l2-normalised; logits_aa / logits_bb with the
    diagonal masked by -LARGE_NUM; loss = mean CE([ab, aa]) + mean CE([ba, bb]). Plus the
    official contrast_acc and contrast_entropy (model.py), which read logits_ab only."""
    large_num = 1e9
    h1 = z1 / np.linalg.norm(z1, axis=1, keepdims=True)
    h2 = z2 / np.linalg.norm(z2, axis=1, keepdims=True)
    n = len(h1)
    labels = np.eye(n, 2 * n)  # one_hot(range(n), 2n)
    masks = np.eye(n)
    logits_aa = h1 @ h1.T / tau - masks * large_num
    logits_bb = h2 @ h2.T / tau - masks * large_num
    logits_ab = h1 @ h2.T / tau
    logits_ba = h2 @ h1.T / tau

    def softmax_cross_entropy(onehot, logits):  # tf.losses.softmax_cross_entropy, mean
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        return float(np.mean(-(onehot * log_probs).sum(axis=1)))

    loss_a = softmax_cross_entropy(labels, np.concatenate([logits_ab, logits_aa], 1))
    loss_b = softmax_cross_entropy(labels, np.concatenate([logits_ba, logits_bb], 1))
    prob = np.exp(logits_ab - logits_ab.max(1, keepdims=True))
    prob = prob / prob.sum(1, keepdims=True)
    return {"loss": loss_a + loss_b,
            "contrast_acc": float(np.mean(np.argmax(logits_ab, 1) == np.arange(n))),
            "contrast_entropy": float(-np.mean(np.sum(prob * np.log(prob + 1e-8), -1)))}


def _numeric_grad(f, x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    g = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        d = np.zeros_like(x)
        d[idx] = eps
        g[idx] = (f(x + d) - f(x - d)) / (2 * eps)
    return g


@pytest.fixture(scope="session")
def naive_nt_xent() -> Callable[[np.ndarray, np.ndarray, float], float]:
    """naive_nt_xent(z1, z2, tau): NT-Xent in float64 numpy, a loop over the 2N anchors."""
    return _naive_nt_xent


@pytest.fixture(scope="session")
def official_nt_xent() -> Callable[[np.ndarray, np.ndarray, float], dict[str, float]]:
    """official_nt_xent(z1, z2, tau): {'loss', 'contrast_acc', 'contrast_entropy'} of the
    official TF code, transcribed to float64 numpy."""
    return _official_nt_xent


@pytest.fixture(scope="session")
def numeric_grad() -> Callable[..., np.ndarray]:
    """numeric_grad(f, x, eps=1e-6): central finite differences of a scalar f at x."""
    return _numeric_grad


# ---- A Cloud TPU VM, as JAX's cluster detection sees one -----------------------------------

class _MetadataHandler(http.server.BaseHTTPRequestHandler):
    """GCE's metadata server: /computeMetadata/v1/instance/attributes/<key> -> its value."""

    attributes: dict[str, str] = {}

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        key = self.path.rsplit("/", 1)[-1]
        ok = self.headers.get("Metadata-Flavor") == "Google" and key in self.attributes
        body = self.attributes.get(key, "").encode() if ok else b"not found"
        self.send_response(200 if ok else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def tpu_vm_attributes(hosts: list[str], worker: int) -> dict[str, str]:
    """The metadata attributes JAX's GceTpuCluster reads on worker `worker` of a slice whose
    workers are `hosts` (what `gcloud compute tpus tpu-vm create` sets up)."""
    return {"agent-worker-number": str(worker), "worker-network-endpoints": ",".join(hosts),
            "tpu-env": f"WORKER_ID: '{worker}'\nACCELERATOR_TYPE: 'v4-{8 * len(hosts)}'\n"}


@pytest.fixture
def metadata_server() -> Iterator[Callable[[dict[str, str]], str]]:
    """metadata_server(attributes): a GCE metadata server on localhost serving `attributes`;
    returns its host:port (what JAX's GCE_METADATA_IP names). Closed after the test."""
    servers = []

    def serve(attributes: dict[str, str]) -> str:
        handler = type("Handler", (_MetadataHandler,), {"attributes": dict(attributes)})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"127.0.0.1:{server.server_address[1]}"

    try:
        yield serve
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


def _without_launcher_variables(monkeypatch) -> None:
    for key in list(os.environ):
        if key.startswith(("SLURM_", "OMPI_", "PMIX_", "MEGASCALE_", "TPU_", "JAX_COORDINATOR")) \
                or key == "KUBERNETES_SERVICE_HOST":
            monkeypatch.delenv(key)


@pytest.fixture
def tpu_vm(monkeypatch, metadata_server) -> Callable[[list[str], int], None]:
    """tpu_vm(hosts, worker): this process is worker `worker` of a TPU VM slice of `hosts`, as
    a VM created with `gcloud compute tpus tpu-vm create` presents it to JAX: the TPU chips
    found (jax's running_in_cloud_tpu_vm) and a metadata server (here on localhost, reached
    through JAX's GCE_METADATA_IP) with the slice's attributes. No launcher variables are set."""
    from jax._src.clusters import cloud_tpu_cluster

    _without_launcher_variables(monkeypatch)
    # jax's cloud_tpu_init sets this from the PCI bus (TPU chips found); the module holds a copy.
    monkeypatch.setattr(cloud_tpu_cluster, "running_in_cloud_tpu_vm", True)

    def configure(hosts: list[str], worker: int) -> None:
        monkeypatch.setenv("GCE_METADATA_IP", metadata_server(tpu_vm_attributes(hosts, worker)))

    return configure


@pytest.fixture
def cluster_task_envs(metadata_server) -> Callable[[str, int, int], list[dict[str, str]]]:
    """cluster_task_envs(kind, ntasks, port): the variables each of `ntasks` processes on this
    host gets from a launcher JAX detects, with no coordinator flags. kind 'slurm': what `srun`
    sets (those JAX's SlurmCluster reads); 'gcloud_tpu': workers of a TPU VM slice made with
    gcloud (a metadata server each; SIMCLR_TEST_TPU_VM makes tests/support/sitecustomize.py
    report TPU chips to JAX). JAX_COORDINATOR_PORT is JAX's own override of its port choice."""

    def envs(kind: str, ntasks: int, port: int) -> list[dict[str, str]]:
        if kind == "slurm":
            return [{"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "localhost",
                     "SLURM_STEP_NUM_NODES": "1", "SLURM_NTASKS": str(ntasks),
                     "SLURM_PROCID": str(i), "SLURM_LOCALID": str(i),
                     "JAX_COORDINATOR_PORT": str(port)} for i in range(ntasks)]
        if kind == "gcloud_tpu":
            hosts = ["127.0.0.1"] * ntasks
            return [{"SIMCLR_TEST_TPU_VM": "1", "JAX_COORDINATOR_PORT": str(port),
                     "GCE_METADATA_IP": metadata_server(tpu_vm_attributes(hosts, i))}
                    for i in range(ntasks)]
        raise ValueError(kind)

    return envs
