"""A lost worker in a multi-process eval job waiting for checkpoints (`--wait`): the other
process stops within the heartbeat timeout with one error line naming it; the rerun goes on."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from simclr_jax.errors import RERUN_EXIT_CODE

ROOT = Path(__file__).resolve().parents[2]
HEARTBEAT_S = 10
FLAGS = ["--config.batch_size=32", "--config.eval_batch_size=64", "--config.num_train_steps=6",
         "--config.log_every_steps=3", f"--heartbeat_timeout={HEARTBEAT_S}", "--wait"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_pair(tmp_path: Path, run: Path, tfds_dir: str, name: str) -> list[subprocess.Popen]:
    address = f"127.0.0.1:{_free_port()}"
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    procs = []
    for i in range(2):
        with open(tmp_path / f"{name}-{i}.log", "w") as log:
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "simclr_jax.linear_eval", f"--config.pretrained={run}",
                 f"--config.data_dir={tfds_dir}", f"--workdir={tmp_path / 'eval'}", *FLAGS,
                 f"--coordinator_address={address}", "--num_processes=2", f"--process_id={i}"],
                env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True))
    return procs


def _kill(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


@pytest.mark.slow(110)
def test_lost_worker_ends_a_waiting_eval_job_and_the_rerun_goes_on(tmp_path, tfds_dir,
                                                                    pretrained_run):
    run = tmp_path / "run"
    shutil.copytree(pretrained_run, run)
    final = tmp_path / "final_checkpoint"
    shutil.move(run / "checkpoints" / "4", final)  # the pretraining has reached step 2 only
    procs = _start_pair(tmp_path, run, tfds_dir, "first")
    log0 = tmp_path / "first-0.log"
    try:
        deadline = time.time() + 600
        while "linear_eval: step 2 " not in log0.read_text():  # evaluated; now waiting
            assert time.time() < deadline and all(p.poll() is None for p in procs), \
                log0.read_text()[-3000:]
            time.sleep(0.1)
        os.killpg(procs[1].pid, signal.SIGKILL)
        killed = time.time()
        code = procs[0].wait(timeout=HEARTBEAT_S + 120)
        stopped_after = time.time() - killed
    finally:
        _kill(procs)
    output = log0.read_text()
    assert code == RERUN_EXIT_CODE, output[-3000:]
    assert "Traceback" not in output and "Fatal Python error" not in output, output[-3000:]
    errors = [line for line in output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "lost worker: process 1 stopped sending heartbeats" in errors[0]
    assert stopped_after < HEARTBEAT_S + 30, stopped_after  # the bound (see core/supervise.py)

    shutil.move(final, run / "checkpoints" / "4")  # the pretraining went on meanwhile
    procs = _start_pair(tmp_path, run, tfds_dir, "rerun")
    try:
        codes = [p.wait(timeout=900) for p in procs]
    finally:
        _kill(procs)
    output = (tmp_path / "rerun-0.log").read_text()
    assert codes == [0, 0], output[-3000:]
    assert "linear_eval: step 4 " in output, output[-3000:]
    print(f"process 0 stopped {stopped_after:.1f} s after process 1 was killed")
