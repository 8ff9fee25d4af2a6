"""First use of the embedded dataset: a job killed while preparing it leaves nothing that stops
the next one, and jobs starting together prepare it once."""

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from simclr_jax.data import builders

ROOT = Path(__file__).resolve().parents[2]
# Prepares the digits with a generator that stalls half-way, so the test can kill -9 it there.
STALLED_PREPARE = (
    "import sys, time\n"
    "from simclr_jax.data import builders, digits\n"
    "real = digits.SklearnDigits._generate_examples\n"
    "def stalled(self, *args):\n"
    "    for i, example in enumerate(real(self, *args)):\n"
    "        if i == 200:\n"
    "            print('half-way', flush=True)\n"
    "            time.sleep(600)\n"
    "        yield example\n"
    "digits.SklearnDigits._generate_examples = stalled\n"
    "builders.get_builder('sklearn_digits', sys.argv[1])\n")


def test_prepare_killed_half_way_is_redone_by_the_next_job(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", STALLED_PREPARE, str(tmp_path)], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True, start_new_session=True,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    try:
        assert "half-way" in (line.strip() for line in proc.stdout), "prepare did not stall"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    dataset_dir = tmp_path / "sklearn_digits"
    assert [p.name for p in dataset_dir.iterdir() if p.name.startswith("incomplete.")]
    builder = builders.get_builder("sklearn_digits", str(tmp_path))
    assert builder.is_prepared()
    assert {s: builder.info.splits[s].num_examples for s in ("train", "test")} == {
        "train": 1497, "test": 300}
    assert sum(1 for _ in builder.as_dataset(split="train")) == 1497
    # The killed job's half-written directory is gone, not left to pile up.
    assert sorted(p.name for p in dataset_dir.iterdir()) == ["1.0.0"]


def test_jobs_preparing_together_prepare_once(tmp_path):
    results, errors = [], []

    def job():
        try:
            results.append(builders.get_builder("sklearn_digits", str(tmp_path)).is_prepared())
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=job) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and results == [True, True, True]
    assert sorted(p.name for p in (tmp_path / "sklearn_digits").iterdir()) == ["1.0.0"]
