"""The pretraining job end to end: checkpoints, metrics, exact resume, and bad input."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from simclr_jax import train
from simclr_jax.errors import UserError
from tests.helpers import tiny_config

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


def test_default_job_writes_checkpoints_and_metrics(tmp_path, tfds_dir):
    train.train_and_evaluate(tiny_config(tfds_dir), str(tmp_path))
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["2", "4"]
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    logged = [r for r in rows if "loss" in r]
    assert [r["step"] for r in logged] == [1, 2, 3, 4]
    for key in ("contrast_acc", "contrast_entropy", "learning_rate", "weight_decay_term",
                "probe_acc", "images_per_sec"):
        assert key in logged[-1]
    assert list(tmp_path.glob("events.out.tfevents.*"))
    # Rerunning a finished run restores the final step and trains no further.
    train.train_and_evaluate(tiny_config(tfds_dir), str(tmp_path))
    assert len([json.loads(line) for line in open(tmp_path / "metrics.jsonl")]) == len(rows)


def test_kill_9_after_checkpoint_then_rerun_matches_uninterrupted(tmp_path, tfds_dir):
    flags = [*TINY_FLAGS, "--config.num_train_steps=12", "--config.checkpoint_every_steps=3"]
    straight = run_cli(tmp_path / "a", *flags, tfds_dir=tfds_dir)
    assert straight.returncode == 0, straight.stdout + straight.stderr
    proc = run_cli(tmp_path / "b", *flags, tfds_dir=tfds_dir, popen=True)
    first = tmp_path / "b" / "checkpoints" / "3"
    deadline = time.time() + 300
    while not first.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    resumed = run_cli(tmp_path / "b", *flags, tfds_dir=tfds_dir)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    a, b = losses(tmp_path / "a"), losses(tmp_path / "b")
    assert [s for s in a if s > 3] == list(range(4, 13))
    for step in range(4, 13):
        assert abs(a[step] - b[step]) <= 1e-5, (step, a[step], b[step])


def test_nan_stops_names_step_and_keeps_last_good_checkpoint(tmp_path, tfds_dir):
    train.train_and_evaluate(tiny_config(tfds_dir, num_train_steps=2), str(tmp_path))
    blowup = tiny_config(tfds_dir, num_train_steps=4, learning_rate=1e30, warmup_epochs=0.0,
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
    train.train_and_evaluate(tiny_config(tfds_dir, num_train_steps=3), str(tmp_path))


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
