"""The sweep end to end on the embedded digits: tables, plot, resume, and bad input."""

import csv
import json
import subprocess
import sys
import types
from pathlib import Path

import pytest

from simclr_jax.errors import UserError
from simclr_jax.research import sweep_data, sweep_lib, sweep_report

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def tiny_experiment(tiny_config) -> dict:
    variants = [
        {"name": "simclr", "overrides": {"loss": "nt_logistic"}, "layers": ("h", "z"),
         "labels": {"kind": "contrastive"}},
        {"name": "supervised", "job": "supervised", "overrides": {"view1_ops": "crop,rotate"},
         "labels": {"kind": "supervised"}},
        {"name": "broken", "overrides": {"view1_ops": "crop,solarize"},
         "labels": {"kind": "broken"}},
        {"name": "untrained", "job": "random_init", "layers": ("h", "z"),
         "labels": {"kind": "reference"}},
    ]
    return {"title": "tiny", "base": tiny_config(num_train_steps=3),
            "variants": variants, "evaluation": "knn,linear", "metric": "knn_h",
            "plot": {"kind": "bars"}, "bar_metrics": ["knn_h", "knn_z"]}


@pytest.mark.slow(60)
def test_tiny_sweep_writes_tables_and_plot_then_resumes(tmp_path, tiny_experiment):
    log: list[str] = []
    rows = sweep_lib.run_sweep(tiny_experiment, str(tmp_path), log=log.append)
    status = {r["variant"]: r["status"] for r in rows}
    assert status == {"simclr": "ok", "supervised": "ok", "broken": "failed",
                      "untrained": "ok"}
    assert any("broken: FAILED" in line and "solarize" in line for line in log)
    table = list(csv.DictReader(open(tmp_path / "results.csv")))
    assert [r["variant"] for r in table] == ["simclr", "supervised", "broken", "untrained"]
    assert 0.0 <= float(table[3]["knn_z"]) <= 1.0
    assert not (tmp_path / "variants" / "untrained" / "metrics.jsonl").exists()  # no training
    simclr = table[0]
    for key in ("knn_h", "knn_z", "linear_h", "linear_z"):
        assert 0.0 <= float(simclr[key]) <= 1.0
    assert 0.0 <= float(table[1]["supervised_top1"]) <= 1.0
    assert "solarize" in table[2]["error"]
    markdown = (tmp_path / "results.md").read_text()
    assert "| broken | **FAILED** |" in markdown
    assert (tmp_path / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Every variant keeps its config, metrics and results.
    vdir = tmp_path / "variants" / "simclr"
    assert json.loads((vdir / "config.json").read_text())["loss"] == "nt_logistic"
    assert (vdir / "metrics.jsonl").exists() and (vdir / "results.json").exists()
    assert (tmp_path / "variants" / "broken" / "error.log").exists()

    # Rerun: finished variants are skipped (untouched), the failed one is retried.
    before = (vdir / "metrics.jsonl").read_text()
    log.clear()
    rows2 = sweep_lib.run_sweep(tiny_experiment, str(tmp_path), log=log.append)
    assert "[sweep] simclr: done, skipped" in log
    assert "[sweep] supervised: done, skipped" in log
    assert any(line.startswith("[sweep] broken: FAILED") for line in log)
    assert (vdir / "metrics.jsonl").read_text() == before
    assert [r.get("knn_h") for r in rows2] == [r.get("knn_h") for r in rows]


def test_knn_accuracy_matches_a_hand_computed_vote():
    import numpy as np

    bank = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    labels = np.array([0, 0, 1])
    queries = np.array([[1.0, 0.05], [0.1, 1.0]])
    # k=1: nearest neighbour's label; k=3 with a large T: majority (class 0 wins both).
    assert sweep_lib.knn_accuracy((bank, labels), (queries, np.array([0, 1])), k=1) == 1.0
    assert sweep_lib.knn_accuracy((bank, labels), (queries, np.array([0, 0])), k=3,
                                  temperature=100.0) == 1.0


def test_heatmap_grid_marks_failed_cells():
    rows = [{"variant": "a", "status": "ok", "t1": "crop", "t2": "crop", "knn_h": 0.5},
            {"variant": "b", "status": "failed", "t1": "crop", "t2": "color"}]
    ylab, xlab, grid = sweep_report.heatmap_grid(rows, "t1", "t2", "knn_h")
    assert (ylab, xlab) == (["crop"], ["crop", "color"])
    assert grid[0, 0] == 0.5 and grid[0, 1] != grid[0, 1]  # NaN for the failed cell



def test_heatmap_plot_writes_failed_only_where_a_variant_failed(tmp_path, monkeypatch):
    from matplotlib.axes import Axes

    texts, text = [], Axes.text
    monkeypatch.setattr(Axes, "text", lambda self, x, y, s, *a, **k: (
        texts.append(s), text(self, x, y, s, *a, **k))[1])
    rows = [{"variant": "a", "status": "ok", "t1": "crop", "t2": "crop", "knn_h": 0.5},
            {"variant": "b", "status": "failed", "t1": "crop", "t2": "color"},
            {"variant": "c", "status": "ok", "t1": "color", "t2": "crop", "knn_h": 0.4}]
    exp = {"plot": {"kind": "heatmap", "row": "t1", "col": "t2"}, "metric": "knn_h"}
    sweep_report.write_plot(rows, exp, tmp_path / "p.png")
    # color+color is no variant at all: blank, not 'failed'.
    assert sorted(texts) == sorted(["50.0", "failed", "40.0", ""])

def test_experiment_with_no_variants_is_a_user_error(monkeypatch):
    empty = types.ModuleType("simclr_jax.research.experiments.empty")
    empty.get_experiment = lambda scale: {"base": None, "variants": []}
    monkeypatch.setitem(sys.modules, empty.__name__, empty)
    monkeypatch.setattr(sweep_lib, "list_experiments", lambda: ["empty"])
    with pytest.raises(UserError, match="experiment 'empty' at scale 'cpu' has no variants"):
        sweep_lib.load_experiment("empty", "cpu")


def test_cpu_scale_needs_the_cifar10_folder_and_names_the_flag(tmp_path, monkeypatch):
    """No default path outside the repository: unset, the flag and the variable are named."""
    monkeypatch.delenv(sweep_data.FOLDER_ENV, raising=False)
    with pytest.raises(UserError, match=r"--cifar10_folder=PATH \(or set SIMCLR_CIFAR10_FOLDER"):
        sweep_data.prepare("cifar10_folder_subset/tiny", str(tmp_path), None)
    with pytest.raises(UserError, match="image folder '/no/such/dir' not found"):
        sweep_data.prepare("cifar10_folder_subset/tiny", str(tmp_path), "/no/such/dir")


def test_bad_sweep_input_stops_the_sweep_before_any_variant(tmp_path, tiny_experiment):
    """A bad --cifar10_folder is the sweep's input, not a variant's failure: one error (main
    recorded it as every variant's failure and went on)."""

    def prepare(folder):
        raise UserError(f"image folder {folder!r} not found (--cifar10_folder)")

    with pytest.raises(UserError, match="image folder '/no/such/dir' not found"):
        sweep_lib.run_sweep({**tiny_experiment, "prepare": prepare}, str(tmp_path),
                            cifar10_folder="/no/such/dir", log=lambda line: None)
    assert not (tmp_path / "variants").exists()


def test_cli_unknown_experiment_is_one_error_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "simclr_jax.sweep", "--experiment=nope",
                             f"--workdir={tmp_path}"], cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "unknown experiment 'nope'" in errors[0], result.stderr
    assert "aug_grid" in errors[0] and "Traceback" not in result.stderr


def test_all_shipped_experiments_load_at_both_scales():
    for name in sweep_lib.list_experiments():
        for scale in ("cpu", "paper"):
            exp = sweep_lib.load_experiment(name, scale)
            for variant in exp["variants"]:
                sweep_lib.variant_config(exp["base"], variant.get("overrides", {}))
