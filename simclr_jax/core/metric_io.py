"""Metric writers: TensorBoard + console (clu) and <workdir>/metrics.jsonl."""

import json
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from clu import metric_writers
from etils import epath

from simclr_jax.errors import UserError


class JsonlWriter(metric_writers.MetricWriter):
    """Appends one JSON object per logged step ({"step": s, name: value, ...}).

    Appending (not rewriting) keeps a resumed run's history; readers take the last row
    of a step when a step was logged twice.
    """

    def __init__(self, path: epath.PathLike):
        self._path = epath.Path(path)
        self._path.parent.mkdir(parents=True, exist_ok=True)

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        row = {"step": int(step)}
        row.update({k: float(np.asarray(v)) for k, v in scalars.items()})
        try:
            with self._path.open("a") as f:
                f.write(json.dumps(row) + "\n")
        except OSError as e:  # disk full, permissions: the checkpoints so far are intact
            raise UserError(f"could not append to {self._path} ({e}): free disk space or fix "
                            f"the permissions of {self._path.parent}, then rerun the same "
                            f"command to resume") from None

    def write_summaries(self, step, values, metadata=None):
        pass

    def write_images(self, step, images):
        pass

    def write_videos(self, step, videos):
        pass

    def write_audios(self, step, audios, *, sample_rate):
        pass

    def write_texts(self, step, texts):
        pass

    def write_histograms(self, step, arrays, num_buckets=None):
        pass

    def write_hparams(self, hparams):
        pass

    def flush(self):
        pass

    def close(self):
        pass


def read_rows(workdir: str) -> list[dict]:
    """The rows of <workdir>/metrics.jsonl ([] if none); a half-written last line is skipped."""
    path = epath.Path(workdir) / "metrics.jsonl"
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return rows


def create_writer(workdir: str) -> metric_writers.MetricWriter:
    """TensorBoard events + console log + metrics.jsonl; only process 0 writes anything."""
    if jax.process_index() > 0:
        return metric_writers.MultiWriter([])
    return metric_writers.MultiWriter([
        metric_writers.create_default_writer(workdir, asynchronous=False),
        JsonlWriter(epath.Path(workdir) / "metrics.jsonl"),
    ])
