"""Resumable evaluation jobs: a SIGTERM saves the classifier's state and exits 0; a kill -9
loses only the steps since the last save; either rerun ends exactly where an uninterrupted run
ends (the same arithmetic and the same batches: bitwise equal parameters and accuracies). A
state saved by another config is not resumed from."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from simclr_jax.core import checkpointing

ROOT = Path(__file__).resolve().parents[2]
STEPS = 150  # fast steps: enough of them that a signal lands mid-run
FLAGS = [f"--config.num_train_steps={STEPS}", "--config.batch_size=32",
         "--config.eval_batch_size=64", "--config.log_every_steps=1",
         "--config.checkpoint_every_steps=25"]


def _start(job: str, workdir: Path, pretrained: str, *flags: str) -> subprocess.Popen:
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    log = open(workdir.with_suffix(".log"), "a")
    return subprocess.Popen([sys.executable, "-m", f"simclr_jax.{job}", f"--workdir={workdir}",
                             f"--config.pretrained={pretrained}", *FLAGS, *flags],
                            env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


def _finish(proc: subprocess.Popen, workdir: Path, timeout: float = 600) -> str:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        pytest.fail(f"still running after {timeout} s")
    output = workdir.with_suffix(".log").read_text()
    assert proc.returncode == 0 or proc.returncode == -signal.SIGKILL, output[-3000:]
    return output


def _wait_for_step(proc, workdir: Path, step: int, timeout: float = 600) -> None:
    deadline = time.time() + timeout
    path = workdir / "metrics.jsonl"
    while time.time() < deadline and proc.poll() is None:
        if path.exists() and any(json.loads(line).get("step", 0) >= step and
                                 "train_loss" in line for line in path.read_text().splitlines()
                                 if line.strip()):
            return
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    pytest.fail(f"step {step} never logged: {workdir.with_suffix('.log').read_text()[-3000:]}")


def _final(workdir: Path) -> tuple[dict, list[np.ndarray]]:
    doc = json.loads((workdir / "results.json").read_text())
    state = checkpointing.read_numpy(str(workdir / "train_state" / "pretrain_step_4" /
                                         "classifier"))
    assert int(state["step"]) == STEPS
    return doc, jax.tree_util.tree_leaves({k: state[k] for k in ("params", "batch_stats")})


def _assert_same_end(a: Path, b: Path) -> None:
    (doc_a, leaves_a), (doc_b, leaves_b) = _final(a), _final(b)
    for key in ("top1", "top5", "eval_loss", "num_eval_examples", "train_steps"):
        assert doc_a[key] == doc_b[key], key
    assert len(leaves_a) == len(leaves_b)
    for x, y in zip(leaves_a, leaves_b, strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("job,flags,interrupt", [
    ("linear_eval", (), "sigterm"),
    ("finetune", ("--config.label_fraction=0.2",), "kill"),
])
@pytest.mark.slow(45)
def test_an_interrupted_job_resumes_to_the_uninterrupted_result(pretrained_run, tmp_path, job,
                                                                flags, interrupt):
    straight, cut = tmp_path / "straight", tmp_path / "cut"
    _finish(_start(job, straight, pretrained_run, *flags), straight)
    proc = _start(job, cut, pretrained_run, *flags)
    _wait_for_step(proc, cut, 40)
    if interrupt == "sigterm":
        proc.send_signal(signal.SIGTERM)
        output = _finish(proc, cut)
        assert proc.returncode == 0 and "preempted (SIGTERM): saved step" in output, output[-3000:]
        saved = int(output.split("preempted (SIGTERM): saved step ")[1].split()[0])
        assert 40 <= saved < STEPS
    else:  # once the save of step 25 is finished (Orbax saves asynchronously)
        saved_25 = cut / "train_state" / "pretrain_step_4" / "classifier" / "checkpoints" / "25"
        deadline = time.time() + 300
        while not saved_25.is_dir() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.02)
        assert saved_25.is_dir(), cut.with_suffix(".log").read_text()[-3000:]
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        saved = None
    assert not (cut / "results.json").exists()
    output = _finish(_start(job, cut, pretrained_run, *flags), cut)
    resumed = int(output.split("Resuming the classifier from step ")[1].split()[0])
    assert resumed == saved if saved is not None else resumed % 25 == 0 and resumed >= 25
    _assert_same_end(straight, cut)
    rows = [json.loads(line) for line in (cut / "metrics.jsonl").read_text().splitlines()]
    assert {r["step"] for r in rows if "train_loss" in r} == set(range(1, STEPS + 1))


def test_a_state_saved_by_another_config_is_not_resumed(setup_state):
    """The saved identity differs (another seed): a warning, then training from step 0."""
    from simclr_jax.evals import loop

    directory, state, config = setup_state
    wanted = loop.identity(config, "ckpt")
    mngr, restored, start = loop.restore_or_start(directory, state, wanted)
    mngr.close()
    assert start == 3
    other = loop.identity(config, "another ckpt")
    mngr, fresh, start = loop.restore_or_start(directory, state, other)
    mngr.close()
    assert start == 0 and fresh is state


@pytest.fixture
def setup_state(tmp_path):
    """A state directory holding step 3 of a tiny state saved with identity ('ckpt')."""
    import jax.numpy as jnp
    import ml_collections

    from simclr_jax.evals import loop

    config = ml_collections.ConfigDict({"seed": 0, "log_every_steps": 1,
                                        "checkpoint_every_steps": 1})
    state = {"w": jnp.zeros(3), "step": jnp.int32(0)}
    directory = str(tmp_path / "state")
    ckpt = checkpointing.Writer(checkpointing.checkpoint_manager(directory, keep=1))
    ckpt.save(3, {"w": jnp.ones(3), "step": jnp.int32(3)},
              ml_collections.ConfigDict(loop.identity(config, "ckpt")))
    ckpt.close()
    return directory, state, config
