"""The pretraining job end to end: checkpoints, metrics, exact resume, and bad input."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

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


def test_default_job_writes_checkpoints_and_metrics(tmp_path, tfds_dir, tiny_config):
    train.train_and_evaluate(tiny_config(), str(tmp_path))
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["2", "4"]
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    logged = [r for r in rows if "loss" in r]
    assert [r["step"] for r in logged] == [1, 2, 3, 4]
    for key in ("contrast_acc", "contrast_entropy", "learning_rate", "weight_decay_term",
                "probe_acc", "images_per_sec"):
        assert key in logged[-1]
    assert list(tmp_path.glob("events.out.tfevents.*"))
    # Rerunning a finished run restores the final step and trains no further.
    train.train_and_evaluate(tiny_config(), str(tmp_path))
    assert len([json.loads(line) for line in open(tmp_path / "metrics.jsonl")]) == len(rows)


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


def test_sigterm_and_kill_9_then_rerun_match_uninterrupted(tmp_path, tfds_dir):
    """SIGTERM: the job saves the current step and exits 0. kill -9: the rerun resumes from
    the last complete checkpoint and ignores a half-written one. Both end where an
    uninterrupted run ends: the same losses and the same final parameters."""
    flags = [*TINY_FLAGS, "--config.num_train_steps=12", "--config.checkpoint_every_steps=3"]
    straight = run_cli(tmp_path / "a", *flags, tfds_dir=tfds_dir)
    assert straight.returncode == 0, straight.stdout + straight.stderr
    a = losses(tmp_path / "a")
    assert sorted(a) == list(range(1, 13))

    # SIGTERM after step 4 is logged: not a checkpoint step, so the save is the notice's.
    term = tmp_path / "term"
    proc = run_cli(term, *flags, tfds_dir=tfds_dir, popen=True)
    wait_until(lambda: (term / "metrics.jsonl").exists() and max(losses(term), default=0) >= 4,
               proc)
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, output
    stopped = max(int(d.name) for d in (term / "checkpoints").iterdir() if d.name.isdigit())
    assert 4 <= stopped < 12 and f"saved step {stopped} of 12" in output, output[-3000:]
    resumed = run_cli(term, *flags, tfds_dir=tfds_dir)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"Resumed from checkpoint step {stopped}" in resumed.stdout + resumed.stderr

    # kill -9 once the first checkpoint is complete, then a half-written later one appears.
    killed = tmp_path / "b"
    proc = run_cli(killed, *flags, tfds_dir=tfds_dir, popen=True)
    wait_until((killed / "checkpoints" / "3").exists, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    complete = max(int(d.name) for d in (killed / "checkpoints").iterdir() if d.name.isdigit())
    partial = killed / "checkpoints" / "9.orbax-checkpoint-tmp-1"
    partial.mkdir(parents=True, exist_ok=True)
    (partial / "junk").write_text("half-written")
    resumed = run_cli(killed, *flags, tfds_dir=tfds_dir)
    output = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, output
    assert complete < 9 and f"Resumed from checkpoint step {complete}" in output, output[-3000:]

    for run in (term, killed):
        b = losses(run)
        assert sorted(b) == list(range(1, 13)), (run, sorted(b))
        for step in range(1, 13):
            assert abs(a[step] - b[step]) <= 1e-5, (run, step, a[step], b[step])
        assert final_params_diff(tmp_path / "a", run) <= 1e-6, run


def test_nan_stops_names_step_and_keeps_last_good_checkpoint(tmp_path, tfds_dir, tiny_config):
    train.train_and_evaluate(tiny_config(num_train_steps=2), str(tmp_path))
    blowup = tiny_config(num_train_steps=4, learning_rate=1e30, warmup_epochs=0.0,
                         checkpoint_every_steps=1)
    with pytest.raises(UserError, match=r"became .* at step (\d+); .*checkpoint \(step (\d+)\)"
                       ) as error:
        train.train_and_evaluate(blowup, str(tmp_path))
    bad, kept = map(int, re.search(r"at step (\d+);.*\(step (\d+)\)", str(error.value)).groups())
    # Steps 3.. are checkpointed every step: exactly those before the bad one exist.
    assert bad >= 3 and kept == bad - 1
    steps = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir())
    assert steps[-1] == kept and bad not in steps
    # The kept checkpoint still resumes with a sane learning rate.
    train.train_and_evaluate(tiny_config(num_train_steps=3), str(tmp_path))


@pytest.mark.parametrize("flags,devices,message", [
    (["--config.batch_size=12"], 8, "batch size 12 (config.batch_size) is not divisible"),
    (["--config.temperature=-0.5"], 1, "config.temperature: must be > 0"),
    (["--config.proj_head_mode=mlp"], 1, "config.proj_head_mode: must be one of"),
    (["--config.temperatur=0.5"], 1, "unknown config key config.temperatur"),
    (["--config.dataset=no_such_dataset"], 1, "unknown dataset 'no_such_dataset'"),
    (["--config.dataset=cifar10"], 1, "run `tfds build cifar10"),
])
def test_bad_input_gives_one_clear_error(tmp_path, tfds_dir, flags, devices, message):
    result = run_cli(tmp_path, *flags, "--config.num_train_steps=1", devices=devices,
                     tfds_dir=tfds_dir)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "Traceback" not in output
    errors = [line for line in output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0], output
