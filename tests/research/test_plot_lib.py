"""The metrics picture: curves read the way a resumed run wrote them, eval histories, overlays
and bad input."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from simclr_jax.errors import UserError
from simclr_jax.research import plot_lib

ROOT = Path(__file__).resolve().parents[2]


def write_rows(workdir: Path, rows: list[dict]) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    with open(workdir / "metrics.jsonl", "a") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    return workdir


def test_curves_take_the_last_row_of_a_step_as_a_resumed_run_logs_it(tmp_path):
    run = write_rows(tmp_path / "run", [
        {"step": 1, "loss": 6.0}, {"step": 2, "loss": 5.0}, {"step": 3, "loss": 4.9},
        {"step": 3, "loss": 4.0, "knn_top1": 0.5}, {"step": 4, "loss": 3.5}])
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 5, "lo')  # a row cut short by a kill -9
    data = plot_lib.curves(str(run))
    assert data["loss"] == ([1, 2, 3, 4], [6.0, 5.0, 4.0, 3.5])
    assert data["knn_top1"] == ([3], [0.5])


def test_eval_workdir_gives_its_newest_checkpoint_curves_and_the_history(tmp_path):
    ev = write_rows(tmp_path / "linear", [
        {"step": 1, "train_loss": 2.0, "checkpoint_step": 100},
        {"step": 2, "train_loss": 1.0, "checkpoint_step": 100},
        {"step": 1, "train_loss": 1.5, "checkpoint_step": 200},
        {"step": 2, "train_loss": 0.5, "checkpoint_step": 200}])
    history = [{"checkpoint_step": 100, "top1": 0.6, "top5": 0.9},
               {"checkpoint_step": 200, "top1": 0.7, "top5": 0.95}]
    (ev / "results.json").write_text(json.dumps({**history[-1], "history": history}))
    assert plot_lib.curves(str(ev))["train_loss"] == ([1, 2], [1.5, 0.5])
    assert plot_lib.eval_history(str(ev)) == {"top1": ([100, 200], [0.6, 0.7]),
                                              "top5": ([100, 200], [0.9, 0.95])}
    out = plot_lib.write_plot([str(ev)], str(tmp_path / "ev.png"))
    assert Image.open(out).size[0] > 300


def test_pretraining_run_and_overlay_write_one_png(pretrained_run, tmp_path):
    other = write_rows(tmp_path / "other", [{"step": s, "loss": 6.0 - s, "probe_acc": 0.1 * s}
                                             for s in range(1, 5)])
    one = plot_lib.write_plot([pretrained_run], str(tmp_path / "one.png"))
    both = plot_lib.write_plot([pretrained_run, str(other)], str(tmp_path / "both.png"))
    for path in (one, both):
        image = Image.open(path)
        assert image.format == "PNG" and min(image.size) > 200


def test_bad_input_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="workdir .* does not exist"):
        plot_lib.write_plot([str(tmp_path / "nope")], str(tmp_path / "x.png"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="has no metrics.jsonl rows and no results.json"):
        plot_lib.write_plot([str(tmp_path / "empty")], str(tmp_path / "x.png"))
    run = write_rows(tmp_path / "run", [{"step": 1, "loss": 1.0}])
    with pytest.raises(UserError, match=r"--out=.*x.txt: expected a .png file name"):
        plot_lib.write_plot([str(run)], str(tmp_path / "x.txt"))
    with pytest.raises(UserError, match="folder .* of --out=.* does not exist"):
        plot_lib.write_plot([str(run)], str(tmp_path / "no" / "x.png"))


def test_command_writes_the_png_and_reports_bad_input_in_one_line(tmp_path):
    run = write_rows(tmp_path / "run", [{"step": s, "loss": 5.0 / s} for s in range(1, 4)])
    ok = subprocess.run([sys.executable, "-m", "simclr_jax.plot", f"--workdir={run}"],
                        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0 and f"wrote {run / 'metrics.png'}" in ok.stdout, ok.stderr
    bad = subprocess.run([sys.executable, "-m", "simclr_jax.plot",
                          f"--workdir={tmp_path / 'nope'}"], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    errors = [line for line in bad.stderr.splitlines() if line.startswith("error: ")]
    assert bad.returncode == 2 and len(errors) == 1 and "does not exist" in errors[0]
    assert "Traceback" not in bad.stderr
