"""The pretraining job end to end: checkpoints, metrics, exact resume, and bad input."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from simclr_jax.config import validate
from simclr_jax.core import checkpointing, train
from simclr_jax.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
TINY_FLAGS = ["--config.image_size=8", "--config.width_multiplier=0.125",
              "--config.proj_out_dim=16", "--config.batch_size=16", "--config.log_every_steps=1"]


def losses(workdir) -> dict[int, float]:
    """step -> loss from metrics.jsonl (a resumed run's rows overwrite the killed run's)."""
    rows = [json.loads(line) for line in open(Path(workdir) / "metrics.jsonl")]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def run_cli(workdir, *flags, devices=1, tfds_dir, **popen):
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    cmd = [sys.executable, "-m", "simclr_jax.pretrain", f"--workdir={workdir}",
           f"--config.data_dir={tfds_dir}", *flags]
    if popen:
        return subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
    return subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_default_job_writes_checkpoints_and_metrics(tmp_path, tfds_dir, tiny_config, capsys):
    train.train_and_evaluate(tiny_config(), str(tmp_path))
    summary = capsys.readouterr().out
    assert "pretrain: finished at step 4 of 4; this job trained 4 steps in " in summary
    assert f"checkpoints: {tmp_path / 'checkpoints'} (steps 2, 4)" in summary
    assert (f"python -m simclr_jax.linear_eval --config.pretrained={tmp_path} "
            f"--workdir={tmp_path}_linear") in summary
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["2", "4"]
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    logged = [r for r in rows if "loss" in r]
    assert [r["step"] for r in logged] == [1, 2, 3, 4]
    for key in ("contrast_acc", "contrast_entropy", "learning_rate", "weight_decay_term",
                "probe_acc", "images_per_sec"):
        assert key in logged[-1]
    assert list(tmp_path.glob("events.out.tfevents.*"))
    # Rerunning a finished run trains no further, says so and what to run next.
    train.train_and_evaluate(tiny_config(), str(tmp_path))
    assert len([json.loads(line) for line in open(tmp_path / "metrics.jsonl")]) == len(rows)
    again = capsys.readouterr().out
    assert f"pretrain: the run in {tmp_path} is already complete (step 4 of 4; loss " in again
    assert f"python -m simclr_jax.knn --config.pretrained={tmp_path}" in again


def final_params_diff(a, b) -> float:
    """Largest absolute difference of two runs' final parameters and BN statistics."""
    sa, sb = checkpointing.read_numpy(str(a)), checkpointing.read_numpy(str(b))
    assert int(sa["step"]) == int(sb["step"])
    return max(float(np.max(np.abs(x - y))) for key in ("params", "batch_stats")
               for x, y in zip(jax.tree_util.tree_leaves(sa[key]),
                               jax.tree_util.tree_leaves(sb[key]), strict=True))


def wait_until(condition, proc, timeout_s=300) -> None:
    deadline = time.time() + timeout_s
    while not condition() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "run ended before it could be interrupted"
    assert condition(), f"nothing happened within {timeout_s} s"


def finished_checkpoints(workdir: Path) -> list[int]:
    return sorted(int(d.name) for d in (workdir / "checkpoints").iterdir() if d.name.isdigit())


@pytest.mark.slow(85)
def test_sigterm_then_kill_9_then_rerun_match_uninterrupted(tmp_path, tfds_dir):
    """One run stopped twice: SIGTERM (the job saves the current step and exits 0), then its
    rerun killed -9 (the next rerun resumes from the last complete checkpoint and ignores a
    half-written later one). It ends where an uninterrupted run ends: the same losses and the
    same final parameters (same device count: the same programs). XLA's convolutions compile
    and run fastest; the resumes below run the CPU default (oneDNN)."""
    flags = [*TINY_FLAGS, "--config.num_train_steps=12", "--config.checkpoint_every_steps=3",
             "--config.conv_impl=xla"]
    straight = run_cli(tmp_path / "a", *flags, tfds_dir=tfds_dir)
    assert straight.returncode == 0, straight.stdout + straight.stderr
    a = losses(tmp_path / "a")
    assert sorted(a) == list(range(1, 13))

    # SIGTERM after step 4 is logged: not a checkpoint step, so the save is the notice's.
    run = tmp_path / "run"
    proc = run_cli(run, *flags, tfds_dir=tfds_dir, popen=True)
    wait_until(lambda: (run / "metrics.jsonl").exists() and max(losses(run), default=0) >= 4,
               proc)
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, output
    stopped = max(finished_checkpoints(run))
    assert 4 <= stopped < 12 and f"saved step {stopped} of 12" in output, output[-3000:]

    # The rerun resumes there; kill -9 once it has completed a checkpoint of its own.
    proc = run_cli(run, *flags, tfds_dir=tfds_dir, popen=True)
    wait_until(lambda: max(finished_checkpoints(run)) > stopped, proc)
    proc.send_signal(signal.SIGKILL)
    output, _ = proc.communicate(timeout=60)
    assert f"Resumed from checkpoint step {stopped}" in output, output[-3000:]
    complete = max(finished_checkpoints(run))
    partial = run / "checkpoints" / f"{complete + 1}.orbax-checkpoint-tmp-1"
    partial.mkdir()
    (partial / "junk").write_text("half-written")
    resumed = run_cli(run, *flags, tfds_dir=tfds_dir)
    output = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, output
    assert f"Resumed from checkpoint step {complete}" in output, output[-3000:]

    b = losses(run)
    assert sorted(b) == list(range(1, 13)), sorted(b)
    for step in range(1, 13):
        assert abs(a[step] - b[step]) <= 1e-5, (step, a[step], b[step])
    assert final_params_diff(tmp_path / "a", run) <= 1e-6


def test_nan_stops_names_step_and_keeps_last_good_checkpoint(tmp_path, tfds_dir, tiny_config):
    """A run whose loss becomes non-finite stops with one error naming the step and the last
    good checkpoint; every step before it is saved (checkpoint_every_steps=1), the bad one
    not, and the kept one restores. (A rerun with a saner learning rate is another run: the
    resume rule refuses it, tests/core/test_resume.py.)"""
    blowup = tiny_config(num_train_steps=6, learning_rate=1e30, warmup_epochs=0.0,
                         checkpoint_every_steps=1)
    with pytest.raises(UserError, match=r"became .* at step (\d+); .*checkpoint \(step (\d+)\)"
                       ) as error:
        train.train_and_evaluate(blowup, str(tmp_path))
    bad, kept = map(int, re.search(r"at step (\d+);.*\(step (\d+)\)", str(error.value)).groups())
    assert bad >= 2 and kept == bad - 1  # step 1's loss is the initial network's
    steps = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir())
    assert steps == list(range(1, kept + 1))
    assert checkpointing.read_numpy(str(tmp_path), kept)["step"] == kept


@pytest.mark.parametrize("overrides,message", [
    ({"batch_size": 12}, "batch size 12 (config.batch_size) is not divisible"),  # 8 devices
    ({"temperature": -0.5}, "config.temperature: must be > 0"),
    ({"proj_head_mode": "mlp"}, "config.proj_head_mode: must be one of"),
    ({"dataset": "no_such_dataset"}, "unknown dataset 'no_such_dataset'"),
    ({"dataset": "cifar10"}, "run `tfds build cifar10"),
])
def test_bad_input_is_one_user_error_before_any_work(tmp_path, tiny_config, overrides, message):
    """The job's errors are UserErrors (the command line prints each as one `error:` line with
    exit code 2, the test below); nothing is written before the check."""
    with pytest.raises(UserError) as error:
        config = tiny_config(num_train_steps=1, **overrides)
        validate(config)  # what the command runs first
        train.train_and_evaluate(config, str(tmp_path))
    assert message in str(error.value)
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.parametrize("flags,message", [
    (["--config.temperatur=0.5"], "unknown config key config.temperatur"),  # flag parsing
    (["--config.dataset=cifar10"], "run `tfds build cifar10"),  # a UserError of the job
])
def test_bad_input_on_the_command_line_is_one_error_line_and_exit_2(tmp_path, tfds_dir, flags,
                                                                  message):
    result = run_cli(tmp_path, *flags, "--config.num_train_steps=1", tfds_dir=tfds_dir)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "Traceback" not in output
    errors = [line for line in output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0], output


# ---- Faults a job survives through the command line (README "Failure modes") ----------------
# These resume copies of the session's `pretrained_run` (8 devices, 4 steps, checkpoints 2 and
# 4, kNN every 2 steps) with the flags of its config, so its metrics are the uninterrupted
# reference. On another device count the reductions over the batch are summed in another order:
# losses agree to float noise only (1e-4 relative over 4 steps, the acceptance check's bound).

PRETRAINED_RUN_FLAGS = [*TINY_FLAGS, "--config.num_train_steps=4",
                        "--config.checkpoint_every_steps=2", "--config.knn_every_steps=2"]
RTOL = 1e-4
NOISE = ("Traceback", "Event loop is closed", "Exception ignored", "never retrieved")


@pytest.fixture
def copy_run(pretrained_run, tmp_path):
    """copy_run(name): a fresh copy of the session's 4-step run."""
    return lambda name: Path(shutil.copytree(pretrained_run, tmp_path / name))


def one_clean_error(result, *fragments) -> str:
    """Exit 2, exactly one `error:` line holding every fragment, no traceback of any kind."""
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-3000:]
    errors = [line for line in output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, output[-3000:]
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    for noise in NOISE:
        assert noise not in output, output[-3000:]
    return errors[0]


def test_rerun_with_another_model_is_one_error_line_naming_the_changed_keys(copy_run, tfds_dir):
    """Main printed the restore error amid a dozen 'Event loop is closed' tracebacks (Orbax's
    aborted restore); now the config rule refuses the rerun before any work."""
    run = copy_run("wider")
    before = sorted(p.name for p in (run / "checkpoints").iterdir())
    result = run_cli(run, *PRETRAINED_RUN_FLAGS, "--config.width_multiplier=0.25",
                     "--config.seed=1", "--config.log_every_steps=2",
                     "--config.num_train_steps=6", tfds_dir=tfds_dir)
    error = one_clean_error(result, "config.seed: 0 -> 1",
                            "config.width_multiplier: 0.125 -> 0.25", "checkpoint step 4")
    # Keys that may change on resume are not refused.
    assert "log_every_steps: " not in error and "num_train_steps: " not in error
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == before


@pytest.mark.slow(37)
def test_resume_on_4_and_1_devices_logs_the_8_device_losses(copy_run, pretrained_run, tfds_dir):
    """Step 4 removed (4 devices) or bit-flipped (1 device: the damaged step is named, moved
    aside, and the run resumes from step 2). Both log the 8-device run's losses and end with
    the summary."""
    reference = losses(pretrained_run)
    four = copy_run("four")
    shutil.rmtree(four / "checkpoints" / "4")
    one = copy_run("one")
    step4 = one / "checkpoints" / "4"
    data = max((p for p in (step4 / "state").rglob("*") if p.is_file()),
               key=lambda p: p.stat().st_size)
    flipped = bytearray(data.read_bytes())
    flipped[len(flipped) // 2] ^= 0x01
    data.write_bytes(bytes(flipped))

    for run, devices in ((four, 4), (one, 1)):
        # Without the kNN monitor (a cadence may change on resume): it is not what is tested.
        result = run_cli(run, *PRETRAINED_RUN_FLAGS, "--config.knn_every_steps=0",
                         devices=devices, tfds_dir=tfds_dir)
        output = result.stdout + result.stderr
        assert result.returncode == 0, output[-3000:]
        assert "Resumed from checkpoint step 2" in output, output[-3000:]
        got = losses(run)
        for step in (3, 4):
            np.testing.assert_allclose(got[step], reference[step], rtol=RTOL)
        assert ("pretrain: finished at step 4 of 4 (resumed from step 2); this job trained 2 "
                "steps in ") in result.stdout, output[-3000:]
        assert f"checkpoints: {run / 'checkpoints'} (steps 2, 4)" in result.stdout
    assert "Checkpoint step 4 is unreadable (file state/" in output
    assert "does not match its checksum" in output
    assert (one / "corrupt_checkpoints" / "4").is_dir()


DISK_FULL = """
import errno, runpy, sys
from etils import epath
real = epath.Path.write_text
def write_text(self, *args, **kwargs):
    if "/checkpoints/4" in str(self):
        raise OSError(errno.ENOSPC, "No space left on device", str(self))
    return real(self, *args, **kwargs)
epath.Path.write_text = write_text
sys.argv = ["pretrain", *sys.argv[1:]]
runpy.run_module("simclr_jax.pretrain", run_name="__main__")
"""


@pytest.mark.slow(41)
def test_disk_full_during_a_save_is_one_error_and_the_rerun_resumes(
        tmp_path, pretrained_run, tfds_dir, tiny_config):
    """Every file write of step 4's async save fails (ENOSPC, as a full disk would): one error
    naming the checkpoints directory, with Orbax's threads shut down quietly; step 2 stays
    intact and a rerun (here in-process, on 8 devices) resumes from it."""
    workdir = tmp_path / "full"
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")
    full = subprocess.run([sys.executable, "-c", DISK_FULL, f"--workdir={workdir}",
                           f"--config.data_dir={tfds_dir}", *PRETRAINED_RUN_FLAGS], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=600)
    one_clean_error(full, f"could not write checkpoint step 4 to {workdir / 'checkpoints'}",
                    "No space left on device", "the previous checkpoint (step 2) is intact",
                    "rerun the same command to resume")
    # The failed step stays an unfinished Orbax temporary (removed by the next start).
    assert checkpointing.finished_steps(checkpointing.checkpoint_dir(str(workdir))) == [2]
    train.train_and_evaluate(tiny_config(), str(workdir))  # knn cadence may change on resume
    got, reference = losses(workdir), losses(pretrained_run)
    assert sorted(got) == [1, 2, 3, 4]
    for step in got:
        np.testing.assert_allclose(got[step], reference[step], rtol=RTOL)
