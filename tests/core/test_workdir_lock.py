"""One job per workdir: a second one is refused naming the holder; a killed one blocks nothing."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from simclr_jax.core import train, workdir_lock
from simclr_jax.errors import UserError
from simclr_jax.evals import knn_lib

ROOT = Path(__file__).resolve().parents[2]
HOLD = ("import sys, time\n"
        "from simclr_jax.core import workdir_lock\n"
        "with workdir_lock.locked(sys.argv[1]):\n"
        "    print('locked', flush=True)\n"
        "    time.sleep(600)\n")


def test_second_holder_is_refused_with_pid_and_host_then_may_take_it(tmp_path):
    with workdir_lock.locked(str(tmp_path)):
        info = json.loads((tmp_path / workdir_lock.LOCK_FILE).read_text())
        assert info["pid"] == os.getpid() and info["host"] == socket.gethostname()
        with pytest.raises(UserError, match=rf"workdir {tmp_path} is in use by another job "
                           rf"\(pid {os.getpid()} on host {socket.gethostname()}, started "):
            with workdir_lock.locked(str(tmp_path)):
                pass
    with workdir_lock.locked(str(tmp_path)):  # released: free again
        pass


def test_lock_of_a_killed_job_does_not_block_the_rerun(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(UserError, match=rf"in use by another job \(pid {proc.pid} "):
            with workdir_lock.locked(str(tmp_path)):
                pass
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    time.sleep(0.1)
    # The kernel dropped the dead job's lock; its file (with its pid) is still there.
    assert json.loads((tmp_path / workdir_lock.LOCK_FILE).read_text())["pid"] == proc.pid
    with workdir_lock.locked(str(tmp_path)):
        pass


def test_pretraining_and_eval_jobs_refuse_a_workdir_in_use_before_any_work(
        tmp_path, tiny_config, tiny_eval_config, pretrained_run):
    """A second launch on a busy workdir (here: this process holds the lock) stops before it
    creates checkpoints or metrics, instead of interleaving them with the first job's."""
    busy = rf"workdir {tmp_path} is in use by another job \(pid {os.getpid()} on host "
    with workdir_lock.locked(str(tmp_path)):
        with pytest.raises(UserError, match=busy):
            train.train_and_evaluate(tiny_config(), str(tmp_path))
        with pytest.raises(UserError, match=busy):
            knn_lib.run(tiny_eval_config(pretrained_run, "knn"), str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == [workdir_lock.LOCK_FILE]
