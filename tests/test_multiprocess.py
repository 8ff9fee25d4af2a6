"""Multi-process training: 2 processes x 2 CPU devices equal 1 process x 4 devices.

The processes meet at a localhost coordinator on a free port and use gloo collectives, like the
hosts of a pod slice. Every process runs in its own process group, killed in a `finally`, and
every wait has a deadline. Also: a SIGTERM to one process stops all of them at the same step
with a checkpoint, and bad multi-process input fails fast with one clear error.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from simclr_jax import checkpointing

ROOT = Path(__file__).resolve().parents[1]
STEPS = 12
FLAGS = ["--config.image_size=16", "--config.width_multiplier=0.125", "--config.proj_out_dim=16",
         "--config.batch_size=32", "--config.log_every_steps=1",
         f"--config.num_train_steps={STEPS}", "--config.checkpoint_every_steps=1000",
         "--config.learning_rate=0.1"]
# Why 16 px, B=32 and lr 0.1: gloo sums across processes in another order than one process
# sums its devices, so the losses differ by ~1 ulp from step 1. At 8 px, B=16, lr 1.0 (BN over
# 16 values in the last stage) that grew chaotically to 5e-2 in the loss by step 15; with more
# values per BN statistic and a gentler step it stays near float noise, so the comparison
# below can be tight enough to catch a real sharding or reduction bug.
RUN_TIMEOUT_S = 900  # per run; a tiny run takes ~1 min on 2 idle cores, far more under load


def free_port() -> int:
    """A port nothing listens on right now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Processes:
    """Pretrain jobs started in their own process groups, each logging to a file."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen] = []
        self.logs: list[Path] = []

    def start(self, *args: str, devices: int, cache_dir: Path | None = None,
              name: str = "job") -> subprocess.Popen:
        env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
                   TF_CPP_MIN_LOG_LEVEL="3", TF_ENABLE_ONEDNN_OPTS="0")
        if cache_dir is not None:  # reruns of one topology reuse its compiled programs
            env.update(JAX_COMPILATION_CACHE_DIR=str(cache_dir),
                       JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
        log = self.log_dir / f"{name}-{len(self.logs)}.log"
        with open(log, "w") as out:
            proc = subprocess.Popen([sys.executable, "-m", "simclr_jax.pretrain", *args],
                                    env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        self.procs.append(proc)
        self.logs.append(log)
        return proc

    def output(self, proc: subprocess.Popen) -> str:
        return self.logs[self.procs.index(proc)].read_text()

    def wait(self, procs: list[subprocess.Popen], timeout_s: float) -> list[int]:
        """Exit codes; fails (after killing them) if any is still running at the deadline."""
        deadline = time.time() + timeout_s
        for p in procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                self.kill_all()
                tails = "\n".join(self.output(q)[-3000:] for q in procs)
                pytest.fail(f"still running after {timeout_s} s:\n{tails}")
        return [p.returncode for p in procs]

    def kill_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait()


@pytest.fixture
def procs(tmp_path):
    processes = Processes(tmp_path)
    try:
        yield processes
    finally:
        processes.kill_all()


def start_group(procs: Processes, workdir: Path, *flags: str, num: int, devices: int,
                tfds_dir: str, timeout_s: int = 120, cache_dir: Path | None = None
                ) -> list[subprocess.Popen]:
    """`num` processes of one job at a fresh localhost coordinator."""
    address = f"127.0.0.1:{free_port()}"
    return [procs.start(f"--workdir={workdir}", f"--config.data_dir={tfds_dir}", *flags,
                        f"--coordinator_address={address}", f"--num_processes={num}",
                        f"--process_id={i}", f"--distributed_timeout={timeout_s}",
                        devices=devices, cache_dir=cache_dir, name=f"p{i}")
            for i in range(num)]


def metric_rows(workdir: Path) -> list[dict]:
    path = workdir / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def losses(workdir: Path) -> dict[int, float]:
    """step -> loss; a resumed run's rows follow (and would overwrite) the first run's."""
    return {r["step"]: r["loss"] for r in metric_rows(workdir) if "loss" in r}


def wait_for_step(workdir: Path, step: int, procs: Processes, running: list, timeout_s: float
                  ) -> None:
    """Until metrics.jsonl has logged `step` (fails if a process ends or time runs out)."""
    deadline = time.time() + timeout_s
    while not any(r.get("step", 0) >= step and "loss" in r for r in metric_rows(workdir)):
        ended = [p for p in running if p.poll() is not None]
        if ended or time.time() > deadline:
            procs.kill_all()
            tails = "\n".join(procs.output(p)[-3000:] for p in running)
            pytest.fail(f"step {step} never logged (ended: {len(ended)}):\n{tails}")
        time.sleep(0.02)


def max_param_diff(a: Path, b: Path) -> float:
    """Largest absolute difference of the final parameters and BN statistics of two runs."""
    sa, sb = checkpointing.read_numpy(str(a)), checkpointing.read_numpy(str(b))
    assert int(sa["step"]) == int(sb["step"]) == STEPS
    diffs = [float(np.max(np.abs(x - y))) for key in ("params", "batch_stats")
             for x, y in zip(jax.tree_util.tree_leaves(sa[key]),
                             jax.tree_util.tree_leaves(sb[key]), strict=True)]
    return max(diffs)


def test_two_processes_match_one_process_through_sigterm_and_resume(tmp_path, tfds_dir, procs):
    """2 x 2 devices (SIGTERM to process 1 mid-run, then rerun) vs 1 x 4 devices, uninterrupted.

    The 2-process run goes first so that, with a fresh data_dir, its processes also prepare the
    embedded dataset at the same moment (process 0 first, the others after a barrier).
    """
    two, one = tmp_path / "two", tmp_path / "one"
    group = start_group(procs, two, *FLAGS, num=2, devices=2, tfds_dir=tfds_dir,
                        cache_dir=tmp_path / "cache2x2")
    wait_for_step(two, 2, procs, group, RUN_TIMEOUT_S)
    group[1].send_signal(signal.SIGTERM)  # only process 1: the notice must reach process 0
    codes = procs.wait(group, 300)
    outputs = [procs.output(p) for p in group]
    assert codes == [0, 0], "\n".join(o[-3000:] for o in outputs)
    stopped = sorted(int(p.name) for p in (two / "checkpoints").iterdir() if p.name.isdigit())
    assert len(stopped) == 1 and 2 <= stopped[0] < STEPS, (stopped, outputs[0][-3000:])
    for out in outputs:  # both processes stopped at that step and saved it together
        assert f"Preempted (SIGTERM): saved step {stopped[0]} of {STEPS}" in out, out[-3000:]

    group = start_group(procs, two, *FLAGS, num=2, devices=2, tfds_dir=tfds_dir,
                        cache_dir=tmp_path / "cache2x2")
    codes = procs.wait(group, RUN_TIMEOUT_S)
    assert codes == [0, 0], "\n".join(procs.output(p)[-3000:] for p in group)
    assert f"Resumed from checkpoint step {stopped[0]}" in procs.output(group[0])

    ref = procs.start(f"--workdir={one}", f"--config.data_dir={tfds_dir}", *FLAGS, devices=4)
    assert procs.wait([ref], RUN_TIMEOUT_S) == [0], procs.output(ref)[-3000:]

    # Only process 0 writes metrics: one row per step (two writers would double them).
    steps = [r["step"] for r in metric_rows(two) if "loss" in r]
    assert steps == list(range(1, STEPS + 1)), steps
    a, b = losses(one), losses(two)
    diff = max(abs(a[s] - b[s]) for s in range(1, STEPS + 1))
    print(f"max |loss(1x4) - loss(2x2)| over {STEPS} steps: {diff:.3g}")
    assert diff <= 1e-5, {s: (a[s], b[s]) for s in range(1, STEPS + 1)
                          if abs(a[s] - b[s]) > 1e-5}
    param_diff = max_param_diff(one, two)
    print(f"max |param(1x4) - param(2x2)| after {STEPS} steps: {param_diff:.3g}")
    assert param_diff <= 1e-5


def run_quick(*args: str, devices: int = 1, env_extra: dict | None = None, timeout_s: int = 120
              ) -> tuple[int, str, float]:
    """A pretrain job expected to fail fast: (exit code, output, seconds)."""
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
               **(env_extra or {}))
    t0 = time.time()
    result = subprocess.run([sys.executable, "-m", "simclr_jax.pretrain", *args], env=env,
                            cwd=ROOT, capture_output=True, text=True, timeout=timeout_s,
                            start_new_session=True)
    return result.returncode, result.stdout + result.stderr, time.time() - t0


def one_error_line(output: str) -> str:
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, output
    return errors[0]


@pytest.mark.parametrize("process_id", [1, 0])
def test_coordinator_unreachable_fails_within_the_timeout(tmp_path, process_id):
    """Process 1 finds nobody at the address; process 0 waits in vain for process 1."""
    address = f"127.0.0.1:{free_port()}"
    code, output, seconds = run_quick(
        f"--workdir={tmp_path}", f"--coordinator_address={address}", "--num_processes=2",
        f"--process_id={process_id}", "--distributed_timeout=3")
    assert code == 2, output
    error = one_error_line(output)
    assert address in error and "--distributed_timeout" in error, error
    if process_id == 1:
        assert "nothing accepts connections" in error, error
    assert seconds < 60, seconds  # 3 s of waiting plus start-up, not JAX's default 300 s


@pytest.mark.parametrize("flags,message", [
    (["--coordinator_address=127.0.0.1:1", "--num_processes=2", "--process_id=2"],
     "--process_id=2 is out of range for --num_processes=2: use 0..1"),
    (["--coordinator_address=127.0.0.1:1", "--num_processes=2", "--process_id=-1"],
     "--process_id=-1 is out of range"),
    (["--process_id=1"], "--process_id=1 needs --num_processes"),
])
def test_bad_process_flags_give_one_clear_error(tmp_path, flags, message):
    code, output, _ = run_quick(f"--workdir={tmp_path}", *flags)
    assert code == 2, output
    assert message in one_error_line(output), output


def test_batch_not_divisible_by_global_device_count(tmp_path, tfds_dir, procs):
    """12 % (2 processes x 4 devices) != 0, though each process's 4 devices would divide it."""
    group = start_group(procs, tmp_path / "w", *FLAGS[:3], "--config.batch_size=12",
                        num=2, devices=4, tfds_dir=tfds_dir)
    assert procs.wait(group, 300) == [2, 2]
    for p in group:
        error = one_error_line(procs.output(p))
        assert "batch size 12 (config.batch_size) is not divisible by the 8 devices" in error
