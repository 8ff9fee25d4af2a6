"""The stall watchdog end to end: a data read that never returns ends the job with one error
line naming the phase, every thread's stack in the workdir's logs and exit code 75; the rerun
resumes and logs the losses of a run that never stalled."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from simclr_jax.errors import RERUN_EXIT_CODE

ROOT = Path(__file__).resolve().parents[2]
STEPS = 9
STALL_S = 4
FLAGS = ["--config.image_size=8", "--config.width_multiplier=0.125", "--config.proj_out_dim=16",
         "--config.batch_size=16", "--config.log_every_steps=1",
         f"--config.num_train_steps={STEPS}", "--config.checkpoint_every_steps=1",
         f"--config.stall_timeout_s={STALL_S}", "--config.conv_impl=xla"]


def losses(workdir: Path) -> dict[int, float]:
    """step -> loss (a resumed run's rows overwrite those of the run it continues)."""
    path = workdir / "metrics.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def start(workdir: Path, data: Path, tfds_dir: str) -> subprocess.Popen:
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")
    return subprocess.Popen(
        [sys.executable, "-m", "simclr_jax.pretrain", f"--workdir={workdir}",
         f"--config.data_dir={tfds_dir}", f"--config.dataset=folder:{data}", *FLAGS],
        env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True)


def finish(proc: subprocess.Popen, timeout_s: float = 300) -> str:
    try:
        return proc.communicate(timeout=timeout_s)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@pytest.mark.slow(60)
def test_a_read_that_never_returns_ends_the_job_and_the_rerun_resumes(tmp_path, tfds_dir,
                                                                       write_images):
    """An image of the folder becomes a FIFO nobody writes mid-run (as a bucket read that never
    returns): the input pipeline blocks opening it on a later epoch."""
    data = tmp_path / "images"
    write_images(data / "a", 20, seed=1)
    write_images(data / "b", 20, seed=2)  # 40 images: 2 steps of 16 per epoch
    image = data / "a" / "img1_000.jpg"
    image_bytes = image.read_bytes()
    # The reference runs alongside, on a copy (the example order hashes relative paths only).
    shutil.copytree(data, tmp_path / "copy")
    straight = start(tmp_path / "straight", tmp_path / "copy", tfds_dir)
    run = tmp_path / "run"
    proc = start(run, data, tfds_dir)
    deadline = time.time() + 300
    while max(losses(run), default=0) < 2 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, finish(proc)[-3000:]
    image.unlink()
    os.mkfifo(image)  # opening it for reading blocks until a writer appears: never
    stalled_at = time.time()
    output = finish(proc)
    ended_after = time.time() - stalled_at
    assert proc.returncode == RERUN_EXIT_CODE, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    errors = [line for line in output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, output[-3000:]
    assert f"no progress for {STALL_S} s in phase 'input'" in errors[0], errors[0]
    stacks = run / "logs" / "stalled-process-0.txt"
    assert str(stacks) in errors[0] and "rerun the same command" in errors[0], errors[0]
    dump = stacks.read_text()
    assert "Current thread" in dump and "(most recent call first)" in dump, dump
    assert "stall-watchdog" not in errors[0]
    # Bound: the stall starts within the few steps that epoch's prefetched batches last, then
    # STALL_S plus one poll (<= STALL_S / 10); 60 s is generous margin for a loaded host.
    assert ended_after < STALL_S + 60, ended_after
    saved = [int(p.name) for p in (run / "checkpoints").iterdir() if p.name.isdigit()]
    assert saved and max(saved) < STEPS, saved

    image.unlink()
    image.write_bytes(image_bytes)  # the storage answers again: rerun the same command
    assert straight.wait(timeout=300) == 0, finish(straight)
    expected = losses(tmp_path / "straight")
    assert sorted(expected) == list(range(1, STEPS + 1))
    rerun = start(run, data, tfds_dir)
    output = finish(rerun)
    assert rerun.returncode == 0, output[-3000:]
    assert f"Resumed from checkpoint step {max(saved)}" in output, output[-3000:]
    assert losses(run) == expected
    print(f"the job ended {ended_after:.1f} s after the read began to block "
          f"(stall_timeout_s={STALL_S})")
    shutil.rmtree(data)
