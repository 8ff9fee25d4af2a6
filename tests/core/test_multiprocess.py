"""Multi-process training: what holds exactly, and what holds within a derived tolerance.

- Resume (exact): 2 processes x 2 devices stopped by a SIGTERM to one process and rerun log the
  losses and end with the parameters of an uninterrupted 2 x 2 run, bitwise.
- One step (a few ulps): from the same state and batch, 2 x 2 computes the loss, gradients and
  BN statistics of 1 process x 4 devices; both read the same global batches (exact).
- Bad multi-process input fails fast with one clear error.

The processes meet at a localhost coordinator on a free port and use gloo collectives, like the
hosts of a pod slice. Every process runs in its own process group, killed in a `finally`, and
every wait has a deadline.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np
import pytest

from simclr_jax.core import checkpointing

ROOT = Path(__file__).resolve().parents[2]
STEPS = 8
FLAGS = ["--config.image_size=16", "--config.width_multiplier=0.125", "--config.proj_out_dim=16",
         "--config.batch_size=32", "--config.log_every_steps=1",
         f"--config.num_train_steps={STEPS}", "--config.checkpoint_every_steps=1000",
         "--config.learning_rate=0.1",
         "--config.conv_impl=xla"]  # compiles fastest; what is tested is the sharding
RUN_TIMEOUT_S = 900  # per run; a tiny run takes ~1 min on 2 idle cores, far more under load
# One step through reordered f32 reductions: gloo sums across processes in another order than
# one process sums its devices (BN statistics, the gathered logits, the gradient all-reduce), so
# each quantity differs by some ulps of its scale: measured worst 2.7e-6 of a leaf's largest
# magnitude (~22 ulps; the stem's kernel gradient, behind every reduction), the loss 2 ulps.
# A real sharding bug (another row order, per-process BN, a missing psum) moves them by 1e-3 or
# more, and another batch by ~1. 5e-5 (~400 ulps) sits between with 20x margin each way.
ONE_STEP_RTOL = 5e-5


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
              name: str = "job", script: Path | None = None,
              env_extra: dict[str, str] | None = None) -> subprocess.Popen:
        """`python -m simclr_jax.pretrain ARGS` (or `python SCRIPT ARGS`) on `devices`, with
        the variables `env_extra` added to this environment."""
        env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
                   TF_CPP_MIN_LOG_LEVEL="3", TF_ENABLE_ONEDNN_OPTS="0", **(env_extra or {}))
        if cache_dir is not None:  # reruns of one topology reuse its compiled programs
            env.update(JAX_COMPILATION_CACHE_DIR=str(cache_dir),
                       JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
        log = self.log_dir / f"{name}-{len(self.logs)}.log"
        with open(log, "w") as out:
            command = [str(script)] if script else ["-m", "simclr_jax.pretrain"]
            proc = subprocess.Popen([sys.executable, *command, *args],
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
    """`num` processes of one job at a fresh localhost coordinator (`flags` may add
    --heartbeat_timeout)."""
    address = f"127.0.0.1:{free_port()}"
    return [procs.start(f"--workdir={workdir}", f"--config.data_dir={tfds_dir}", *flags,
                        f"--coordinator_address={address}", f"--num_processes={num}",
                        f"--process_id={i}", f"--distributed_timeout={timeout_s}",
                        devices=devices, cache_dir=cache_dir, name=f"p{i}")
            for i in range(num)]


@pytest.fixture(scope="session")
def cache2x2(shared_dir) -> Path:
    """The compilation cache of the 2 x 2 jobs of FLAGS, shared by the tests and xdist workers:
    reruns of one topology reuse its compiled programs."""
    return shared_dir("cache2x2")


@pytest.fixture(scope="session")
def straight_2x2(made_once, tfds_dir, cache2x2) -> Callable[[], Path]:
    """straight_2x2(): the workdir of an uninterrupted 2 x 2 run of FLAGS, run once for the
    whole session (the first test to call it runs it; the xdist workers share it)."""

    def make(root: Path) -> None:
        procs = Processes(root)
        try:
            group = start_group(procs, root / "run", *FLAGS, num=2, devices=2,
                                tfds_dir=tfds_dir, cache_dir=cache2x2)
            assert procs.wait(group, RUN_TIMEOUT_S) == [0, 0], procs.output(group[0])[-3000:]
        finally:
            procs.kill_all()

    return lambda: made_once("straight2x2", make) / "run"


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


def final_state(workdir: Path) -> dict:
    """The parameters and BN statistics of a run's newest checkpoint, as numpy."""
    saved = checkpointing.read_numpy(str(workdir))
    assert int(saved["step"]) == STEPS
    return {k: jax.tree_util.tree_leaves(saved[k]) for k in ("params", "batch_stats")}


def sigterm_after(procs: Processes, group: list, workdir: Path, step: int) -> int:
    """SIGTERM to process 1 only once `step` is logged; both must stop and save one step."""
    wait_for_step(workdir, step, procs, group, RUN_TIMEOUT_S)
    group[1].send_signal(signal.SIGTERM)  # only process 1: the notice must reach process 0
    codes = procs.wait(group, 300)
    outputs = [procs.output(p) for p in group]
    assert codes == [0, 0], "\n".join(o[-3000:] for o in outputs)
    saved = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
    assert len(saved) == 1 and step <= saved[0] < STEPS, (saved, outputs[0][-3000:])
    for out in outputs:  # both processes stopped at that step and saved it together
        assert f"Preempted (SIGTERM): saved step {saved[0]} of {STEPS}" in out, out[-3000:]
    return saved[0]


@pytest.mark.slow(160)
def test_two_process_resume_is_exact(tmp_path, tfds_dir, procs, cache2x2, straight_2x2):
    """2 x 2 devices, SIGTERM to process 1 mid-run and a rerun == 2 x 2 uninterrupted, bitwise.

    Both sides run the same programs with the same reduction order (same processes, devices and
    collectives), and the resumed run restores exact values and re-reads the same batches, so
    every logged loss and every final parameter must be identical: any tolerance here would
    hide a resume bug (a skipped or repeated batch, a stale optimiser slot, a reset RNG).
    The interrupted run goes first so that, with a fresh data_dir, its two processes also
    prepare the embedded dataset at the same moment (process 0 first, the other after a barrier).
    """
    cut = tmp_path / "cut"
    cache = cache2x2
    group = start_group(procs, cut, *FLAGS, num=2, devices=2, tfds_dir=tfds_dir,
                        cache_dir=cache)
    stopped = sigterm_after(procs, group, cut, 2)
    group = start_group(procs, cut, *FLAGS, num=2, devices=2, tfds_dir=tfds_dir,
                        cache_dir=cache)
    assert procs.wait(group, RUN_TIMEOUT_S) == [0, 0], procs.output(group[0])[-3000:]
    assert f"Resumed from checkpoint step {stopped}" in procs.output(group[0])
    straight = straight_2x2()

    # Only process 0 writes metrics: one row per step (two writers would double them).
    steps = [r["step"] for r in metric_rows(cut) if "loss" in r]
    assert steps == list(range(1, STEPS + 1)), steps
    a, b = losses(straight), losses(cut)
    assert a == b, {s: (a[s], b.get(s)) for s in a if a[s] != b.get(s)}
    sa, sb = final_state(straight), final_state(cut)
    for key in sa:
        for x, y in zip(sa[key], sb[key], strict=True):
            np.testing.assert_array_equal(x, y, err_msg=key)
    # Both processes wrote their own train step to the cache (tests/support/sitecustomize.py;
    # JAX alone writes process 0's only, and their keys differ), so the reruns compiled nothing.
    assert len(list(cache.glob("jit_train_step-*"))) == 2, sorted(p.name for p in cache.iterdir())
    print(f"resumed at step {stopped}: {STEPS} losses and all final parameters bitwise equal")


HEARTBEAT_S = 10  # the test's --heartbeat_timeout: JAX's default (100 s) would slow it down


@pytest.mark.slow(130)
def test_a_lost_worker_stops_the_other_with_one_error_and_the_rerun_resumes(
        tmp_path, tfds_dir, procs, cache2x2, straight_2x2):
    """kill -9 of process 1 (parent and child: a host gone) once a checkpoint is saved.

    Process 0 must stop within the heartbeat timeout with one `error:` line naming process 1
    (no C++ abort, no Python fatal-error dump on its terminal: those go to its native log),
    exit 75; rerunning both resumes and logs the losses of an uninterrupted 2 x 2 run exactly.
    """
    cache = cache2x2
    run = tmp_path / "run"
    flags = [*FLAGS, "--config.checkpoint_every_steps=2", f"--heartbeat_timeout={HEARTBEAT_S}"]
    group = start_group(procs, run, *flags, num=2, devices=2, tfds_dir=tfds_dir,
                        cache_dir=cache)
    deadline = time.time() + RUN_TIMEOUT_S
    while not list(run.glob(f"checkpoints/*/{checkpointing.MANIFEST}")):  # a complete save
        assert time.time() < deadline and all(p.poll() is None for p in group), \
            procs.output(group[0])[-3000:]
        time.sleep(0.05)
    os.killpg(group[1].pid, signal.SIGKILL)
    killed = time.time()
    assert procs.wait([group[0]], HEARTBEAT_S + 120) == [75], procs.output(group[0])[-3000:]
    stopped_after = time.time() - killed
    output = procs.output(group[0])
    for noise in ("Traceback", "Fatal Python error", "Check failure"):
        assert noise not in output, output[-3000:]
    # No C++ log line (glog format, from a .cc/.h file) and no misleading storage error.
    assert not re.search(r"^[EFW]\d{4} [^\]]*\.(cc|h):\d+\]", output, flags=re.M), output[-3000:]
    assert "could not write checkpoint" not in output, output[-3000:]
    error = one_error_line(output)
    assert "lost worker: process 1 stopped sending heartbeats" in error, error
    assert "rerun every worker" in error, error
    native = Path(error.split("Native log: ")[1].strip())  # JAX's report and abort went here
    assert native.name == "native-process-0.log" and "stopped sending heartbeats" in \
        native.read_text()
    # Bound: the heartbeat timeout after process 1's last heartbeat, plus the service's check
    # period (~1 s); 30 s of margin for a loaded host.
    assert stopped_after < HEARTBEAT_S + 30, stopped_after
    saved = max(checkpointing.finished_steps(checkpointing.checkpoint_dir(str(run))))
    assert saved < STEPS

    group = start_group(procs, run, *flags, num=2, devices=2, tfds_dir=tfds_dir,
                        cache_dir=cache)
    assert procs.wait(group, RUN_TIMEOUT_S) == [0, 0], procs.output(group[0])[-3000:]
    assert f"Resumed from checkpoint step {saved}" in procs.output(group[0])
    expected = losses(straight_2x2())
    assert losses(run) == expected
    print(f"process 0 stopped {stopped_after:.1f} s after process 1 was killed; resumed at "
          f"step {saved}")


def run_step_workers(procs: Processes, out: Path, tfds_dir: str, *, num: int, devices: int,
                     resume_step: int) -> dict[str, np.ndarray]:
    """multiprocess_step.py on `num` processes x `devices` devices; process 0's record."""
    extra = []
    if num > 1:
        address = f"127.0.0.1:{free_port()}"
        extra = [f"--coordinator_address={address}", f"--num_processes={num}"]
    group = [procs.start(f"--out={out}", f"--data_dir={tfds_dir}",
                         f"--resume_step={resume_step}", *extra,
                         *([f"--process_id={i}"] if num > 1 else []),
                         devices=devices, name=f"step{num}x{devices}-{i}",
                         script=Path(__file__).with_name("multiprocess_step.py"))
             for i in range(num)]
    assert procs.wait(group, RUN_TIMEOUT_S) == [0] * num, procs.output(group[0])[-3000:]
    with np.load(out) as record:
        return dict(record)


def assert_close_to_scale(a: np.ndarray, b: np.ndarray, what: str) -> float:
    """|a - b| <= ONE_STEP_RTOL x max|a| elementwise; returns the largest difference / scale."""
    scale = max(float(np.max(np.abs(a))), np.finfo(np.float32).tiny)
    diff = float(np.max(np.abs(a.astype(np.float64) - b))) / scale
    assert diff <= ONE_STEP_RTOL, (what, diff)
    return diff


@pytest.mark.slow(130)
def test_two_processes_compute_one_process_step_and_read_its_batches(tmp_path, tfds_dir,
                                                                     procs):
    """2 processes x 2 devices vs 1 process x 4 devices, one step from the same state.

    - Data sharding, exact: each process reads only its rows, yet the assembled global batches
      of steps 0..R+1 (positions and pixels of both views) equal those one process reads, and so
      do those of a stream restarted at step R (how a resume reads), on both sides.
    - The step, within ONE_STEP_RTOL of each quantity's scale: loss, metrics, gradients and
      updated BN statistics of the batches of steps 0 and 1, and the state after one real
      jitted train step. Only one step: over many steps the ulp differences of the reordered
      sums grow chaotically (x10 a step was measured), so a trajectory would prove nothing.
    """
    resume = 3
    two = run_step_workers(procs, tmp_path / "two.npz", tfds_dir, num=2, devices=2,
                           resume_step=resume)
    one = run_step_workers(procs, tmp_path / "one.npz", tfds_dir, num=1, devices=4,
                           resume_step=resume)
    assert sorted(two) == sorted(one)
    batches = [k for k in one if k.startswith("batch/")]
    assert len(batches) == 3 * (resume + 2 + 2), batches
    for key in batches:
        np.testing.assert_array_equal(one[key], two[key], err_msg=key)
        if key.startswith("batch/resumed/"):  # the restarted stream is the straight one
            np.testing.assert_array_equal(
                one[key], one[key.replace("resumed", "straight")], err_msg=key)
    positions = one["batch/straight/1/['position']"]
    np.testing.assert_array_equal(positions, np.arange(32, 64))  # global order of step 1

    worst = {}
    for key in (k for k in one if not k.startswith("batch/")):
        if one[key].dtype == np.bool_:
            assert one[key] == two[key], key
            continue
        worst[key.split("/")[0]] = max(worst.get(key.split("/")[0], 0.0),
                                       assert_close_to_scale(one[key], two[key], key))
    # The comparison can fail: the same quantities for another batch are far apart.
    grads = [k for k in one if k.startswith("grads/0/") and np.any(one[k])]
    assert len(grads) > 10  # (convs feeding a zero-initialised BN scale get zero gradients)
    apart = max(float(np.max(np.abs(one[k] - one[k.replace("/0/", "/1/")])))
                / float(np.max(np.abs(one[k]))) for k in grads)
    assert apart > 100 * ONE_STEP_RTOL, apart
    print("largest difference / scale, 2x2 vs 1x4:",
          ", ".join(f"{k} {v:.2g}" for k, v in sorted(worst.items())))


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
    # 3 s of waiting plus start-up (two imports: the supervising parent's and the job's, up
    # to ~25 s each on a loaded 2-core host), not JAX's default 300 s.
    assert seconds < 120, seconds


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



# Not started together (longest first would pair them on the two workers): the second finds
# the 2 x 1 programs the first compiled in the session's compilation cache.
@pytest.mark.parametrize("cluster", [pytest.param("gcloud_tpu", marks=pytest.mark.slow(75)),
                                     pytest.param("slurm", marks=pytest.mark.slow(45))])
def test_a_detected_cluster_needs_no_coordinator_flags(tmp_path, tfds_dir, procs, cluster,
                                                       cluster_task_envs):
    """Two processes of a simulated launch (workers of a gcloud-made TPU VM slice, or the tasks
    of `srun -n 2`) run the real pretrain command with no coordinator flags: JAX's cluster
    detection makes them one 2-process job (1 device each, the global batch over both), which
    trains and writes its final checkpoint once."""
    workdir = tmp_path / cluster
    envs = cluster_task_envs(cluster, 2, free_port())
    group = [procs.start(f"--workdir={workdir}", f"--config.data_dir={tfds_dir}", *FLAGS,
                         "--config.num_train_steps=2", "--config.batch_size=16",
                         devices=1, name=f"{cluster}{i}", env_extra=env)
             for i, env in enumerate(envs)]
    codes = procs.wait(group, RUN_TIMEOUT_S)
    assert codes == [0, 0], "\n".join(procs.output(p)[-3000:] for p in group)
    saved = [p.name for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()]
    assert saved == ["2"], saved
    # One job, not two: only process 0 writes metrics (one row per step), and each process
    # counts the other's device.
    assert [r["step"] for r in metric_rows(workdir) if "loss" in r] == [1, 2]
    for i, p in enumerate(group):
        assert f"2 devices in 2 processes, 1 here (process {i})" in procs.output(p), \
            procs.output(p)[-3000:]


@pytest.mark.slow(28)
def test_a_workdir_the_processes_do_not_share_is_refused(tmp_path, tfds_dir, procs):
    """Each process names a directory on its own "disk" (as --workdir=runs/x does on every
    host of a pod): every process stops with one error naming the fix, before any work."""
    address = f"127.0.0.1:{free_port()}"
    workdirs = [tmp_path / f"host{i}" / "run" for i in range(2)]
    group = [procs.start(f"--workdir={workdirs[i]}", f"--config.data_dir={tfds_dir}", *FLAGS,
                         "--config.num_train_steps=2", f"--coordinator_address={address}",
                         "--num_processes=2", f"--process_id={i}", devices=1, name=f"host{i}")
             for i in range(2)]
    assert procs.wait(group, RUN_TIMEOUT_S) == [2, 2], procs.output(group[0])[-3000:]
    for p in group:
        error = one_error_line(procs.output(p))
        assert "is not shared by the 2 processes: processes [1] do not see" in error, error
        assert "gs://" in error and "shared filesystem" in error, error
    for workdir in workdirs:  # nothing trained, nothing written, no probe left behind
        assert sorted(p.name for p in workdir.iterdir()) == [], list(workdir.iterdir())
