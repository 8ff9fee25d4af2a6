"""A checkpoint written before the package moved into layers (tests/fixtures/pretrain_v0: the
embedded digits, ResNet-18 at 1/16 width, 8 px, B=16, 2 steps on 1 device, written by the flat
layout's main) still restores: as an encoder, for evaluation, and to resume pretraining. Its
saved config predates the official-architecture keys, so it is read with their legacy values
(config.LEGACY: 'SAME' padding, identity shortcut in group 1, the mean loss)."""

import shutil
from pathlib import Path

import jax
import numpy as np
import pytest

from simclr_jax import downstream
from simclr_jax.config import LEGACY
from simclr_jax.core import checkpointing, train

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


@pytest.mark.slow(55)
def test_old_checkpoint_is_what_the_new_code_writes_and_resumes_the_same(
        old_run, tmp_path, tiny_config, metric_rows, run_job, tfds_dir):
    """On 1 device, as the fixture was written, the new code's 2-step run with the legacy values
    of the keys added since (config.LEGACY) logs the fixture's losses and saves the fixture's
    state (but the online probe's) within float32 rounding, and extending both runs by one step
    logs the same step 3: the old checkpoint, extended with today's defaults, resumes with the
    legacy behaviour of the keys its saved config lacks, as the new one does with the legacy
    values it saved. Rounding, not bitwise: the merged colour jitter (one affine map + one HSV
    round trip) and convolution code reorder float32 operations; a changed behaviour (padding,
    shortcut, loss scale) moves the losses at the 1e-2 level, 1000x the tolerance."""
    fresh = tmp_path / "fresh"
    flags = [f"--config.{k}={v}" for k, v in {
        **ARCHITECTURE, "image_size": 8, "batch_size": 16, "num_train_steps": 2,
        "log_every_steps": 1, "data_dir": tfds_dir, **LEGACY,
        "conv_impl": "im2col"}.items()]  # the fixture's convolutions (auto is oneDNN now)
    result = run_job("pretrain", f"--workdir={fresh}", *flags, devices=1)
    assert result.returncode == 0, result.stderr[-3000:]
    old_state, new_state = checkpointing.read_numpy(str(old_run)), checkpointing.read_numpy(
        str(fresh))
    old_leaves = jax.tree_util.tree_leaves_with_path(old_state)
    new_leaves = dict(jax.tree_util.tree_leaves_with_path(new_state))
    assert len(old_leaves) == len(new_leaves) > 50
    # The online probe is initialised and decayed as the official code's since that fix; it
    # reads stop_gradient(h), so neither the encoder nor the losses depend on it.
    for path, leaf in old_leaves:
        if "['probe']" not in jax.tree_util.keystr(path):
            np.testing.assert_allclose(new_leaves[path], leaf, rtol=1e-4,
                                       atol=1e-5 * max(float(np.abs(leaf).max()), 1e-30),
                                       err_msg=jax.tree_util.keystr(path))
    train.train_and_evaluate(tiny_config(num_train_steps=3, **ARCHITECTURE), str(old_run))
    train.train_and_evaluate(tiny_config(num_train_steps=3, **ARCHITECTURE, **LEGACY),
                             str(fresh))
    old = {r["step"]: r["loss"] for r in metric_rows(old_run) if "loss" in r}
    new = {r["step"]: r["loss"] for r in metric_rows(fresh) if "loss" in r}
    assert sorted(old) == sorted(new) == [1, 2, 3]
    for step in (1, 2, 3):  # 1, 2: the fixture's own log, written by the old code
        np.testing.assert_allclose(new[step], old[step], rtol=1e-5)
