"""bench/accelerator_check.sh --smoke runs end to end on the CPU (tiny sizes), so the script the
first accelerator host will run cannot rot: every part prints its figure after its command."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow(140)
def test_accelerator_check_smoke_prints_every_figure():
    env = dict(os.environ, PYTHON=sys.executable)
    env.pop("XLA_FLAGS", None)  # the script sets its own device count
    done = subprocess.run(["bash", "bench/accelerator_check.sh", "--smoke"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    for needle in ("$ ", "images/s per chip", "MFU", "device augmentation", "scaling 1 -> 2",
                   "host pipeline", "NT-Xent", "accelerator check done"):
        assert needle in out, (needle, out[-3000:])
