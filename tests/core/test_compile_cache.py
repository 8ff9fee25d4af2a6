"""core/compile_cache.py: a restarted job loads its compiled train step from JAX's persistent
compilation cache under its workdir instead of compiling it again (JAX's own log says which);
an explicit cache directory (flag or JAX_COMPILATION_CACHE_DIR) wins over that default."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import pytest

from simclr_jax.core import compile_cache

ROOT = Path(__file__).resolve().parents[2]
# With these JAX logs every persistent-cache hit and miss as a warning.
JAX_CACHE_LOG = {"JAX_LOG_COMPILES": "1", "JAX_EXPLAIN_CACHE_MISSES": "1"}
HIT = "Persistent compilation cache hit for 'jit_train_step'"
MISS = "PERSISTENT COMPILATION CACHE MISS for 'jit_train_step'"


def logged_steps(workdir: Path) -> int:
    path = workdir / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return sum("loss" in json.loads(line) for line in lines if line.strip())


def run_until_preempted(args: list[str], workdir: Path, log: Path, timeout_s: float = 600
                        ) -> str:
    """The pretrain job, sent SIGTERM (a preemption notice) once it logged one more step than
    `workdir` had; its output after it saved that step and exited."""
    before = logged_steps(workdir)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1",
               **JAX_CACHE_LOG)
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "simclr_jax.pretrain", *args], env=env,
                                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.time() + timeout_s
        while logged_steps(workdir) <= before and proc.poll() is None:
            assert time.time() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=timeout_s) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return log.read_text()


@pytest.mark.slow(42)
def test_a_restart_loads_the_train_step_from_the_cache_in_the_workdir(tmp_path, tfds_dir,
                                                                      monkeypatch):
    """Preempted, then started again with the same command: the restart loads the train step
    its first start wrote to <workdir>/compilation_cache (JAX's log: a hit, no miss)."""
    # The test session's own cache and threshold (tests/conftest.py) must not stand in for the
    # job's defaults.
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
    monkeypatch.delenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", raising=False)
    workdir = tmp_path / "run"
    args = [f"--workdir={workdir}", f"--config.data_dir={tfds_dir}", "--config.image_size=8",
            "--config.width_multiplier=0.125", "--config.proj_out_dim=16",
            "--config.batch_size=16", "--config.num_train_steps=1000",
            "--config.log_every_steps=1", "--config.checkpoint_every_steps=1000",
            "--config.conv_impl=xla"]
    first = run_until_preempted(args, workdir, tmp_path / "first.log")
    assert MISS in first and HIT not in first, first[-3000:]
    assert "Preempted (SIGTERM)" in first, first[-3000:]
    written = list((workdir / compile_cache.DIR_NAME).glob("jit_train_step-*"))
    assert len(written) == 1, sorted((workdir / compile_cache.DIR_NAME).iterdir())

    second = run_until_preempted(args, workdir, tmp_path / "second.log")
    assert "Resumed from checkpoint step" in second, second[-3000:]
    assert HIT in second and MISS not in second, second[-3000:]


@pytest.fixture
def cache_config():
    """Restores JAX's cache settings after a test changes them in this process."""
    saved = (jax.config.jax_compilation_cache_dir, jax.config.jax_enable_compilation_cache)
    yield
    jax.config.update("jax_compilation_cache_dir", saved[0])
    jax.config.update("jax_enable_compilation_cache", saved[1])


def test_the_cache_directory_precedence(cache_config, tmp_path):
    """Flag > JAX_COMPILATION_CACHE_DIR (what JAX read from the environment) > the workdir."""
    jax.config.update("jax_compilation_cache_dir", None)
    assert compile_cache.enable("", "gs://bucket/run") == "gs://bucket/run/compilation_cache"
    assert compile_cache.enable("", str(tmp_path)) == "gs://bucket/run/compilation_cache"  # kept
    jax.config.update("jax_compilation_cache_dir", "/from/the/environment")
    assert compile_cache.enable("", "gs://bucket/run") == "/from/the/environment"
    assert compile_cache.enable("gs://b/cache", "gs://bucket/run") == "gs://b/cache"
    assert jax.config.jax_compilation_cache_dir == "gs://b/cache"
    assert compile_cache.enable("none", "gs://bucket/run") is None
    assert not jax.config.jax_enable_compilation_cache
