"""The transfer job: folders (single- and multi-label), resume, bad input, the command on the
digits default with the session's tiny pretraining run, the bar chart."""

import json
import os
from pathlib import Path

import numpy as np
import pytest

from simclr_jax.errors import UserError
from simclr_jax.evals.transfer_lib import datasets, job, splits

ROOT = Path(__file__).resolve().parents[3]
TINY = {"width_multiplier": 0.125, "image_size": 8}


def test_folder_linear_learns_and_reports_both_accuracies(tmp_path, transfer_config,
                                                          class_folder):
    root = class_folder(tmp_path / "data", splits=("train", "val", "test"))
    config = transfer_config("random", datasets=f"folder:{root}", **TINY)
    out = job.run(config, str(tmp_path / "w"))["results"][f"folder:{root}"]["linear"]
    assert out["metric"] == "top1" and out["validation"] == "the dataset's own split 'val'"
    assert out["num_train_examples"] == 24 and out["num_val_examples"] == 24
    assert out["test_top1"] > 0.9 and out["test_mean_per_class"] > 0.9  # colours: easy
    assert len(out["candidates"]) == 5
    doc = json.loads((tmp_path / "w" / "results.json").read_text())
    assert doc["encoder"]["pretrained"] == "random"
    assert "| Linear evaluation |" in (tmp_path / "w" / "transfer.md").read_text()


def test_multi_label_folder_reports_map11(tmp_path, transfer_config, multilabel_folder):
    root = multilabel_folder(tmp_path / "ml")
    target = datasets.resolve(f"folder:{root}", None)
    assert target.multi_label and target.metric == "map11"
    data = splits.load(target, data_dir=None, image_size=8, val_fraction=0.25, seed=0)
    assert data.multi_hot["test"].shape == (24, 2)
    # labels.csv row i: red = i % 2, blue = (i // 2) % 2; classes sorted: blue, red.
    names = [Path(f).name for f in data.test.files]
    rows = np.array([[(int(n[:-4]) // 2) % 2, int(n[:-4]) % 2] for n in names])
    np.testing.assert_array_equal(data.multi_hot["test"], rows)
    config = transfer_config("random", datasets=f"folder:{root}", **TINY)
    out = job.run(config, str(tmp_path / "w"))["results"][f"folder:{root}"]["linear"]
    assert "test_map11" in out and "test_top1" not in out
    assert out["test_map11"] > 0.9
    with pytest.raises(UserError, match="multi-label"):
        job.run(transfer_config("random", datasets=f"folder:{root}", protocol="finetune",
                                **TINY), str(tmp_path / "w2"))
    both = job.run(transfer_config("random", datasets=f"folder:{root}", protocol="both",
                                   **TINY), str(tmp_path / "w"))  # linear is already done
    assert set(both["results"][f"folder:{root}"]) == {"linear"}


def test_held_out_validation_is_seeded_and_disjoint(tmp_path, class_folder):
    root = class_folder(tmp_path / "data", per_class=10)
    target = datasets.resolve(f"folder:{root}", None)
    a = splits.load(target, data_dir=None, image_size=8, val_fraction=0.2, seed=0)
    b = splits.load(target, data_dir=None, image_size=8, val_fraction=0.2, seed=0)
    c = splits.load(target, data_dir=None, image_size=8, val_fraction=0.2, seed=1)
    assert len(a.val) == 6 and len(a.train) == 24 and len(a.train_val) == 30
    assert set(a.val.files).isdisjoint(a.train.files)
    assert set(a.val.files) | set(a.train.files) == set(a.train_val.files)
    assert list(a.val.files) == list(b.val.files) and list(a.val.files) != list(c.val.files)


def test_rerun_skips_finished_datasets_and_redoes_changed_ones(tmp_path, transfer_config,
                                                               class_folder, monkeypatch):
    root = class_folder(tmp_path / "data")
    config = transfer_config("random", datasets=f"folder:{root}", **TINY)
    first = job.run(config, str(tmp_path / "w"))
    calls = []
    stub = {"metric": "top1", "test_top1": 0.5, "test_mean_per_class": 0.5, "val_score": 0.5,
            "chosen": {"lambda": 1.0}}
    monkeypatch.setattr(job, "_linear", lambda *a, **k: calls.append(1) or stub)
    again = job.run(config, str(tmp_path / "w"))
    assert calls == [] and again["results"] == first["results"]
    config.linear_num_lambdas = 3  # another path: that result is recomputed
    redone = job.run(config, str(tmp_path / "w"))
    assert calls == [1] and redone["results"][f"folder:{root}"]["linear"]["test_top1"] == 0.5


@pytest.mark.parametrize("entry, message", [
    ("no_such_dataset_xyz", "unknown dataset"),
    ("dtd", "tfds build dtd"),
    ("fgvc_aircraft", "folder:/path/to/fgvc_aircraft"),
    ("sklearn_digits@map11", "single-label"),
    ("sklearn_digits@top5", "unknown metric"),
])
def test_bad_datasets_are_named(entry, message, tfds_dir):
    with pytest.raises(UserError, match=message):
        datasets.resolve(entry, tfds_dir)


def test_bad_folders_are_named(tmp_path, class_folder, transfer_config):
    no_test = class_folder(tmp_path / "a", splits=("train",))
    with pytest.raises(UserError, match="no test/ folder"):
        datasets.resolve(f"folder:{no_test}", None)
    one = class_folder(tmp_path / "b", classes=1)
    with pytest.raises(UserError, match="1 class"):
        job.run(transfer_config("random", datasets=f"folder:{one}", **TINY),
                str(tmp_path / "w"))


def test_paper_expands_to_the_tfds_datasets():
    names = datasets.expand("paper,folder:/x")
    assert names[:10] == list(datasets.PAPER) and names[-1] == "folder:/x"
    assert "voc/2007" in names and "oxford_flowers102" in names


@pytest.mark.slow(39)
def test_command_on_the_digits_default(pretrained_run, tmp_path, run_job, error_lines):
    """As a user runs it: the tiny pretraining run, both protocols on the digits; then a
    folder without test/ fails with one error line and the digits results kept; the plot."""
    out = tmp_path / "w"
    common = [f"--workdir={out}", f"--config.pretrained={pretrained_run}",
              "--config.linear_num_lambdas=4", "--config.linear_threads=1",
              "--config.finetune_steps=3",
              "--config.finetune_batch_size=16", "--config.eval_batch_size=64",
              "--config.finetune_learning_rates=(0.05,)", "--config.finetune_weight_decays=(0.0,)"]
    result = run_job("transfer", *common, "--config.protocol=both")
    assert result.returncode == 0, result.stderr[-3000:]
    doc = json.loads((out / "results.json").read_text())
    digits = doc["results"]["sklearn_digits"]
    for protocol in ("linear", "finetune"):
        r = digits[protocol]
        assert r["metric"] == "top1" and 0 <= r["test_top1"] <= 1
        assert {"test_mean_per_class", "val_score", "chosen", "candidates"} <= set(r)
    assert digits["linear"]["test_top1"] > 0.3  # a pretrained encoder's features, 10 classes
    assert digits["finetune"]["train_steps"] == 3
    bad = tmp_path / "bad"
    (bad / "train" / "a").mkdir(parents=True)
    result = run_job("transfer", *common, f"--config.datasets=sklearn_digits,folder:{bad}")
    assert result.returncode == 2
    assert len(error_lines(result)) == 1 and "no test/ folder" in error_lines(result)[0]
    assert "Traceback" not in result.stderr
    assert json.loads((out / "results.json").read_text())["results"] == doc["results"]
    plot = run_job("plot", f"--workdir={out}")
    assert plot.returncode == 0, plot.stderr[-2000:]
    assert (out / "transfer.png").stat().st_size > 1000


def test_pretrained_that_is_not_a_run(tmp_path, transfer_config):
    with pytest.raises(UserError, match="does not exist"):
        job.run(transfer_config(str(tmp_path / "nothing")), str(tmp_path / "w"))
    os.makedirs(tmp_path / "empty")
    with pytest.raises(UserError, match="no finished checkpoint"):
        job.run(transfer_config(str(tmp_path / "empty")), str(tmp_path / "w"))


def test_multi_label_tfds_dataset_like_voc(multilabel_tfds, tmp_path, transfer_config):
    """A TFDS set with a `labels` sequence (as voc/2007): multi-hot targets in the feature
    pass's order, 11-point mAP as its headline."""
    target = datasets.resolve("transfer_multi_label_test", multilabel_tfds)
    assert target.multi_label and target.metric == "map11"
    data = splits.load(target, data_dir=multilabel_tfds, image_size=8, val_fraction=0.25, seed=0)
    # Each row's targets are those of the image in the same row of the Source (the colours).
    images = data.test.images.astype(float)
    colours = np.stack([images[..., 0].mean((1, 2)) > 125, images[..., 2].mean((1, 2)) > 125], 1)
    np.testing.assert_array_equal(data.multi_hot["test"], colours.astype(np.int32))
    config = transfer_config("random", datasets="transfer_multi_label_test",
                             data_dir=multilabel_tfds, **TINY)
    out = job.run(config, str(tmp_path / "w"))["results"]["transfer_multi_label_test"]["linear"]
    assert out["metric"] == "map11" and out["test_map11"] > 0.9


def test_device_solver_gives_the_sklearn_path(tmp_path, transfer_config, class_folder):
    """linear_solver='device' (optax L-BFGS on the mesh) on the same features: the same
    validation scores along the path, the same choice and test accuracy."""
    root = class_folder(tmp_path / "data", per_class=12)
    name = f"folder:{root}"
    out = {s: job.run(transfer_config("random", datasets=name, linear_solver=s,
                                      linear_tol=1e-6, **TINY),
                      str(tmp_path / s))["results"][name]["linear"]
           for s in ("sklearn", "device")}
    np.testing.assert_allclose([p["val_score"] for p in out["device"]["candidates"]],
                               [p["val_score"] for p in out["sklearn"]["candidates"]], atol=0.04)
    assert out["device"]["test_top1"] == pytest.approx(out["sklearn"]["test_top1"], abs=0.04)
