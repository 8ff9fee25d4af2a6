"""A checkpoint written before the package moved into layers (tests/fixtures/pretrain_v0: the
embedded digits, ResNet-18 at 1/16 width, 8 px, B=16, 2 steps on 1 device, written by the flat
layout's main) still restores: as an encoder, for evaluation, and to resume pretraining. Its
saved config predates the official-architecture keys, so it is read with their legacy values
(config.LEGACY: 'SAME' padding, identity shortcut in group 1, the mean loss)."""

import shutil
from pathlib import Path

import numpy as np
import pytest

from simclr_jax import downstream
from simclr_jax.config import LEGACY
from simclr_jax.core import train

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "pretrain_v0"
ARCHITECTURE = dict(width_multiplier=0.0625, proj_out_dim=8)


@pytest.fixture
def old_run(tmp_path) -> Path:
    """A copy of the fixture (a resumed run writes into its workdir)."""
    return Path(shutil.copytree(FIXTURE, tmp_path / "old"))


def test_old_checkpoint_loads_as_an_encoder(old_run):
    enc = downstream.load_encoder(str(old_run))
    assert enc.step == 2 and enc.width == 32  # 512 x 1/16
    assert (enc.module.padding, enc.module.shortcut) == ("same", "when_needed")
    assert enc.config.loss_reduction == "mean" and "shortcut_conv" not in \
        enc.variables["params"]["block1_0"]
    x = np.random.default_rng(0).uniform(size=(4, 8, 8, 3)).astype(np.float32)
    h = np.asarray(enc.module.apply(enc.variables, x, train=False))
    assert h.shape == (4, 32) and np.isfinite(h).all() and h.std() > 0


def test_old_checkpoint_resumes_pretraining_as_a_new_checkpoint_does(old_run, tmp_path,
                                                                       tiny_config, metric_rows):
    """The new code's 2-step run with the legacy values logs the fixture's losses (the numbers
    did not move), and extending either run to 3 steps from its step-2 checkpoint with today's
    defaults logs the same step 3: the old checkpoint resumes with its legacy behaviour, as the
    new one with its saved values (up to 1 vs 8 device float noise: the fixture was written on
    1 device, this session has 8)."""
    fresh = tmp_path / "fresh"
    train.train_and_evaluate(tiny_config(num_train_steps=2, **ARCHITECTURE, **LEGACY), str(fresh))
    for workdir in (old_run, fresh):
        train.train_and_evaluate(tiny_config(num_train_steps=3, **ARCHITECTURE), str(workdir))
    old = {r["step"]: r["loss"] for r in metric_rows(old_run) if "loss" in r}
    new = {r["step"]: r["loss"] for r in metric_rows(fresh) if "loss" in r}
    assert sorted(old) == sorted(new) == [1, 2, 3]
    for step in (1, 2, 3):  # 1, 2: the fixture's own log, written by the old code
        np.testing.assert_allclose(old[step], new[step], rtol=1e-4)
