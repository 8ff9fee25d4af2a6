"""What the evaluation tests share: one tiny pretraining run (8 devices) and small eval configs."""

import json
import os
import subprocess
import sys
from pathlib import Path

import ml_collections

from simclr_jax import eval_config, train
from tests.helpers import tiny_config

ROOT = Path(__file__).resolve().parents[1]
_RUNS: dict[str, str] = {}


def pretrained_run(tmp_path_factory, tfds_dir: str) -> str:
    """Workdir of a 4-step tiny pretraining (checkpoints 2 and 4), made once per session.

    Written on the 8 simulated devices of the test session, so restoring it elsewhere with
    fewer devices exercises cross-device-count restore. Its kNN monitor logs at steps 2 and 4.
    """
    if tfds_dir not in _RUNS:
        workdir = str(tmp_path_factory.mktemp("pretrained"))
        train.train_and_evaluate(tiny_config(tfds_dir, knn_every_steps=2), workdir)
        _RUNS[tfds_dir] = workdir
    return _RUNS[tfds_dir]


def tiny_eval_config(pretrained: str, job: str = "linear_eval", **overrides
                     ) -> ml_collections.ConfigDict:
    """The job's digits default, shrunk to a few steps."""
    c = eval_config.get_config(job)
    c.pretrained = pretrained
    c.batch_size = 32
    c.eval_batch_size = 64
    c.num_train_steps = 6
    c.log_every_steps = 3
    c.update(overrides)
    return c


def run_job(module: str, workdir, *flags, devices: int = 1, timeout: int = 600):
    """`python -m simclr_jax.<module>` in a subprocess with `devices` simulated devices."""
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    cmd = [sys.executable, "-m", f"simclr_jax.{module}", f"--workdir={workdir}", *flags]
    return subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def rows(workdir) -> list[dict]:
    """The rows of <workdir>/metrics.jsonl."""
    return [json.loads(line) for line in open(Path(workdir) / "metrics.jsonl")]


def error_lines(result) -> list[str]:
    """The `error:` lines a failed job printed."""
    return [line for line in (result.stdout + result.stderr).splitlines()
            if line.startswith("error: ")]
