"""SIGTERM during the linear path: the job saves the points so far and exits 0; the rerun
fits only the remaining points and finishes."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


def _start(workdir: Path, tfds_dir: str) -> subprocess.Popen:
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")
    return subprocess.Popen(
        [sys.executable, "-m", "simclr_jax.transfer", f"--workdir={workdir}",
         "--config.pretrained=random", "--config.width_multiplier=0.125",
         "--config.image_size=8", f"--config.data_dir={tfds_dir}", "--config.linear_threads=1",
         "--config.linear_max_iter=3000", "--config.linear_tol=1e-9"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True)


@pytest.mark.slow(30)
def test_sigterm_stops_the_path_and_the_rerun_resumes_it(tmp_path, tfds_dir):
    workdir = tmp_path / "w"
    path_json = workdir / "sklearn_digits" / "linear" / "path.json"
    proc = _start(workdir, tfds_dir)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if path_json.exists() and len(json.loads(path_json.read_text())["points"]) >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    output = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, output[-3000:]
    assert "transfer: preempted (SIGTERM)" in output, output[-3000:]
    saved = len(json.loads(path_json.read_text())["points"])
    assert 2 <= saved < 45
    assert not (workdir / "results.json").exists()
    rerun = _start(workdir, tfds_dir)
    output = rerun.communicate(timeout=600)[0]
    assert rerun.returncode == 0, output[-3000:]
    fitted = [int(k) for k in re.findall(r"linear path (\d+)/45", output)]
    assert fitted == list(range(saved + 1, 46))
    result = json.loads((workdir / "results.json").read_text())
    assert len(result["results"]["sklearn_digits"]["linear"]["candidates"]) == 45
