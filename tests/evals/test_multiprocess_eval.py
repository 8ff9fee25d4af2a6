"""Multi-process evaluation: 2 processes x 2 devices against 1 process x 4 devices (localhost
coordinator, gloo collectives, as the hosts of a pod slice).

- kNN on streamed splits (each process reads its own TFRecord shard): the same features for
  every example and the same kNN accuracy. No training is involved, so the features differ by
  a few ulps at most (bitwise on some CPUs, not on all).
- Linear eval / fine-tuning input: the same global batches (exact), also after a restart.
- Fine-tuning's first update from the same state: loss, gradients and BN statistics within
  ONE_STEP_RTOL of each quantity's scale (the reasoning of tests/core/test_multiprocess.py:
  gloo sums in another order than one process sums its devices). Only one step: a trajectory
  of reordered sums drifts chaotically and would prove nothing.
"""

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

WORKER = Path(__file__).with_name("multiprocess_eval.py")
ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 900  # per topology; about a minute on 2 idle cores, far more under load
ONE_STEP_RTOL = 5e-5  # see tests/core/test_multiprocess.py
FEATURE_RTOL = 1e-6  # a few ulps of the features' scale


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _numpy_knn(record: dict, top: int, k: int = 200, temperature: float = 0.1) -> float:
    """Top-`top` accuracy of the weighted kNN vote (k, T: the eval config's defaults) of the
    test features against the train features, in float64 numpy."""
    def unit(x):
        x = x.astype(np.float64)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    sim = unit(record["features/test"]) @ unit(record["features/train"]).T
    nearest = np.argsort(-sim, axis=1)[:, :k]
    weights = np.exp(np.take_along_axis(sim, nearest, 1) / temperature)
    labels = record["labels/train"][nearest]
    classes = int(record["labels/train"].max()) + 1
    scores = np.zeros((sim.shape[0], classes))
    np.add.at(scores, (np.arange(sim.shape[0])[:, None], labels), weights)
    best = np.argsort(-scores, axis=1)[:, :top]
    return float(np.mean((best == record["labels/test"][:, None]).any(axis=1)))


def _run(out: Path, data_dir: str, run: str, num: int, devices: int, resume_step: int
         ) -> dict:
    """The worker on `num` processes x `devices` devices; process 0's record."""
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    extra = ([f"--coordinator_address=127.0.0.1:{_free_port()}", f"--num_processes={num}"]
             if num > 1 else [])
    procs, logs = [], []
    try:
        for i in range(num):
            logs.append(out.with_suffix(f".{i}.log"))
            with open(logs[-1], "w") as log:
                procs.append(subprocess.Popen(
                    [sys.executable, str(WORKER), f"--out={out}", f"--data_dir={data_dir}",
                     f"--pretrained={run}",
                     f"--resume_step={resume_step}", *extra,
                     *([f"--process_id={i}"] if num > 1 else [])],
                    env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                    start_new_session=True))
        for p in procs:
            p.wait(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running after {TIMEOUT_S} s: {logs[0].read_text()[-3000:]}")
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    assert [p.returncode for p in procs] == [0] * num, logs[0].read_text()[-3000:]
    with np.load(out) as record:
        return dict(record)


def _relative(a: np.ndarray, b: np.ndarray) -> float:
    scale = max(float(np.max(np.abs(a))), np.finfo(np.float32).tiny)
    return float(np.max(np.abs(a.astype(np.float64) - b))) / scale


@pytest.mark.slow(125)
def test_two_processes_evaluate_as_one(tmp_path, sharded_digits, pretrained_run):
    resume = 3
    two = _run(tmp_path / "two.npz", sharded_digits, pretrained_run, num=2, devices=2,
               resume_step=resume)
    one = _run(tmp_path / "one.npz", sharded_digits, pretrained_run, num=1, devices=4,
               resume_step=resume)
    assert sorted(two) == sorted(one)

    # kNN over streamed shards: every example, the same features and accuracy.
    for split, n in (("train", 1497), ("test", 300)):
        assert one[f"features/{split}"].shape[0] == n
        np.testing.assert_array_equal(one[f"labels/{split}"], two[f"labels/{split}"])
        diff = _relative(one[f"features/{split}"], two[f"features/{split}"])
        assert diff <= FEATURE_RTOL, (split, diff)
        print(f"{split} features, 2x2 vs 1x4: largest difference / scale {diff:.2g}")
    # The features agree to a few ulps, not bitwise on every CPU (an AMD EPYC sums some in
    # another order): a query whose k-th neighbours tie within that may flip, so each topology's
    # kNN must equal numpy's kNN on its own features, and the two may differ by a flip or two.
    test_n = one["labels/test"].shape[0]
    for record in (one, two):
        for top in (1, 5):
            reference = _numpy_knn(record, top)
            assert abs(float(record[f"knn/top{top}"]) - reference) <= 1 / test_n, (top, reference)
    for top in (1, 5):
        assert abs(float(one[f"knn/top{top}"]) - float(two[f"knn/top{top}"])) <= 2 / test_n
    assert 0.1 < float(one["knn/top1"]) < 1  # a real, non-trivial accuracy

    # The training input: the same global batches, and a restart reads the same ones.
    batches = [k for k in one if k.startswith("batch/")]
    assert len(batches) == 3 * (resume + 2 + 2), batches
    for key in batches:
        np.testing.assert_array_equal(one[key], two[key], err_msg=key)
        if key.startswith("batch/resumed/"):
            np.testing.assert_array_equal(one[key], one[key.replace("resumed", "straight")])
    np.testing.assert_array_equal(one["batch/straight/1/['position']"], np.arange(32, 64))

    # The first update, within a few hundred ulps of each quantity's scale.
    worst = {}
    for key in (k for k in one if k.startswith(("update/", "step/"))):
        diff = _relative(one[key], two[key])
        assert diff <= ONE_STEP_RTOL, (key, diff)
        worst[key.split("/")[1]] = max(worst.get(key.split("/")[1], 0.0), diff)
    grads = [k for k in one if k.startswith("update/grads/") and np.any(one[k])]
    assert len(grads) > 10
    print("largest difference / scale, 2x2 vs 1x4:",
          ", ".join(f"{k} {v:.2g}" for k, v in sorted(worst.items())))
