"""Resuming: the rule for a changed config, and falling back from a damaged newest step."""

import json
import shutil
from pathlib import Path

import pytest

from simclr_jax.config import base_config
from simclr_jax.core import checkpointing, resume, train
from simclr_jax.errors import UserError
from simclr_jax.evals import monitor


@pytest.fixture
def run(pretrained_run, tmp_path) -> Path:
    """A copy of the session's 4-step run (8 devices, checkpoints 2 and 4, kNN every 2)."""
    return Path(shutil.copytree(pretrained_run, tmp_path / "run"))


def saved(config) -> dict:
    return json.loads(config.to_json_best_effort())


def test_only_keys_that_shape_the_run_are_refused_with_old_and_new_values(tiny_config):
    old = saved(tiny_config())
    extended = tiny_config(num_train_steps=10, log_every_steps=5, checkpoint_every_steps=5,
                           keep_checkpoints=1, knn_every_steps=5, data_dir="/elsewhere",
                           conv_impl="im2col", eval_split="train")
    assert resume.config_changes(old, extended) == []
    changed = tiny_config(width_multiplier=0.25, seed=3, batch_size=32, num_train_steps=10)
    assert resume.config_changes(old, changed) == [
        "config.batch_size: 16 -> 32", "config.seed: 0 -> 3",
        "config.width_multiplier: 0.125 -> 0.25"]
    with pytest.raises(UserError, match=r"checkpoint step 7 in .*(config.batch_size: 16 -> 32; "
                       r"config.seed: 0 -> 3; config.width_multiplier: 0.125 -> 0.25).*another "
                       r"--workdir"):
        resume.check_config(old, changed, 7, "runs/x")
    # A key the checkpoint does not know (added to the project later) is not compared.
    del old["crop_on"]
    assert resume.config_changes(old, tiny_config(crop_on="device")) == []


def test_the_keys_that_may_change_exist():
    assert resume.MAY_CHANGE <= set(base_config())


def test_damaged_newest_step_is_moved_aside_and_the_next_one_chosen(run):
    step4 = run / "checkpoints" / "4"
    target = max((p for p in (step4 / "state").rglob("*") if p.is_file()),
                 key=lambda p: p.stat().st_size)
    target.write_bytes(target.read_bytes()[:100])  # truncated, e.g. a disk error
    assert resume.newest_intact_step(str(run)) == 2
    assert not step4.exists() and (run / "corrupt_checkpoints" / "4" / "state").is_dir()
    # Every step damaged: an error, not a silent restart from step 0.
    (run / "checkpoints" / "2" / checkpointing.MANIFEST).write_text('{"files": {"x": [1, 2]}}')
    with pytest.raises(UserError, match="no checkpoint in .* is readable: the damaged ones were "
                       "moved to"):
        resume.newest_intact_step(str(run))


def test_unreadable_step_without_manifest_falls_back_and_training_continues_exactly(
        run, pretrained_run, tiny_config, metric_rows):
    """A truncated file in a step saved without a manifest (an older version's): the restore
    fails, the run says which step, resumes from the one before and logs the losses the
    uninterrupted run logged (same devices, same process: exactly)."""
    step4 = run / "checkpoints" / "4"
    (step4 / checkpointing.MANIFEST).unlink()
    target = max((p for p in (step4 / "state").rglob("*") if p.is_file()),
                 key=lambda p: p.stat().st_size)
    target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
    train.train_and_evaluate(tiny_config(knn_every_steps=2), str(run), monitor=monitor.Monitor)
    assert (run / "corrupt_checkpoints" / "4").is_dir()
    assert checkpointing.finished_steps(checkpointing.checkpoint_dir(str(run))) == [2, 4]
    want = {r["step"]: r for r in metric_rows(pretrained_run) if "loss" in r}
    got = {r["step"]: r for r in metric_rows(run) if "loss" in r}  # last row of a step wins
    for step in (3, 4):
        assert got[step]["loss"] == want[step]["loss"], step
    assert got[4]["knn_top1"] == want[4]["knn_top1"]
