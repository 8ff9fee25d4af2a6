"""Loading the pretrained encoder: exact features, cross-device-count restore, bad input."""

import os
import shutil
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from simclr_jax import downstream  # the users' name of simclr_jax.evals.pretrained
from simclr_jax.core import checkpointing, optim, parallel, train
from simclr_jax.errors import UserError
from simclr_jax.evals import knn_lib
from simclr_jax.models import build_model


@pytest.fixture(scope="module")
def run(pretrained_run) -> str:
    return pretrained_run


def _images(n=6, size=8):
    return jax.random.uniform(jax.random.PRNGKey(1), (n, size, size, 3))


def _pretraining_h(run: str, config, x) -> np.ndarray:
    """h from the pretraining model itself, its state restored the way pretraining resumes."""
    model = build_model(config, num_classes=10)
    tx = optim.build_optimizer(config, optim.learning_rate_schedule(config, 10, 100))
    mngr = checkpointing.checkpoint_manager(run)
    state = checkpointing.restore(mngr, 4, train.init_state_on_mesh(
        model, tx, config, parallel.make_mesh()))
    mngr.close()
    _, h, _ = model.apply({"params": state.params, "batch_stats": state.batch_stats}, x,
                          train=False)
    return np.asarray(h)


class Downstream(nn.Module):
    """A user's model: the pretrained encoder as a submodule, plus a new head."""

    encoder: nn.Module
    num_classes: int = 3

    @nn.compact
    def __call__(self, x, train: bool = False):
        h = self.encoder(x, train=False)
        return nn.Dense(self.num_classes)(h), h


def test_downstream_features_equal_pretraining_h_exactly(run, tiny_config):
    x = _images()
    enc = downstream.load_encoder(run)
    assert enc.step == 4 and enc.width == enc.module.out_width == 64
    h = np.asarray(enc.module.apply(enc.variables, x, train=False))
    expected = _pretraining_h(run, tiny_config(), x)
    np.testing.assert_array_equal(h, expected)
    # As a submodule of a user's own Flax model (the README example).
    model = Downstream(enc.module)
    variables = model.init(jax.random.PRNGKey(0), x)
    variables = {"params": {**variables["params"], "encoder": enc.variables["params"]},
                 "batch_stats": {"encoder": enc.variables["batch_stats"]}}
    logits, h2 = model.apply(variables, x)
    assert logits.shape == (6, 3)
    np.testing.assert_array_equal(np.asarray(h2), expected)


def test_restore_on_one_device_from_an_eight_device_checkpoint(run):
    assert jax.device_count() == 8  # the checkpoint was written on all 8
    one = parallel.make_mesh(jax.devices()[:1])
    small = downstream.load(run, mesh=one, with_head=True)
    full = downstream.load(run, with_head=True)
    for tree in (small.variables, small.head_variables):
        for leaf in jax.tree_util.tree_leaves(tree):
            assert leaf.sharding.device_set == {jax.devices()[0]}
    for a, b in zip(jax.tree_util.tree_leaves((small.variables, small.head_variables)),
                    jax.tree_util.tree_leaves((full.variables, full.head_variables)),
                    strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # And it computes on that one device.
    h = jax.jit(lambda v, x: small.module.apply(v, x, train=False))(small.variables, _images())
    assert h.sharding.device_set == {jax.devices()[0]}


def test_workdir_means_newest_step_and_a_step_dir_means_that_step(run):
    assert downstream.resolve_checkpoint(run)[1] == 4
    step_dir, step = downstream.resolve_checkpoint(f"{run}/checkpoints/2")
    assert step == 2 and step_dir.name == "2"
    assert downstream.list_steps(run) == [2, 4]
    early, late = downstream.load(f"{run}/checkpoints/2"), downstream.load(run)
    assert early.step == 2
    kernel = lambda e: np.asarray(e.variables["params"]["stem_conv"]["kernel"])  # noqa: E731
    assert not np.array_equal(kernel(early), kernel(late))
    # The random-init baseline has the same structure but other values.
    rand = downstream.random_init(late.config)
    assert jax.tree_util.tree_structure(rand.variables) == jax.tree_util.tree_structure(
        late.variables)
    assert not np.array_equal(kernel(rand), kernel(late))


def test_a_relative_path_is_read_from_the_working_directory(run, monkeypatch):
    """`load_encoder("runs/default")` as in the README (Orbax itself wants absolute paths)."""
    parent, name = os.path.split(run)
    monkeypatch.chdir(parent)
    enc = downstream.load_encoder(name)
    assert enc.step == 4
    assert os.path.realpath(enc.path) == os.path.realpath(os.path.join(run, "checkpoints", "4"))
    assert downstream.load(os.path.join(name, "checkpoints", "2")).step == 2


def test_no_checkpoint_is_one_clear_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        downstream.load(str(tmp_path / "nowhere"))
    (tmp_path / "checkpoints").mkdir()
    with pytest.raises(UserError, match="holds no finished checkpoint.*--wait"):
        downstream.load(str(tmp_path))


def test_other_architecture_names_the_keys_and_shapes_that_differ(run):
    with pytest.raises(UserError) as wider:
        downstream.load(run, architecture={"width_multiplier": 0.25})
    message = str(wider.value)
    assert "width_multiplier=0.25" in message and "shapes differ" in message
    assert "params/encoder/block1_0/conv1/kernel (3, 3, 8, 8) vs expected (3, 3, 16, 16)" in message
    with pytest.raises(UserError, match=r"missing in checkpoint: .*block1_2"):
        downstream.load(run, architecture={"resnet_depth": 34})


def test_architecture_diff_lists_missing_extra_and_shapes():
    want = {"a": jnp.zeros((2,)), "b": jnp.zeros((3,)), "c": jnp.zeros((1,))}
    have = {"a": jnp.zeros((2,)), "b": jnp.zeros((4,)), "d": jnp.zeros((1,))}
    diff = downstream.architecture_diff(want, have)
    assert "missing in checkpoint: c" in diff and "only in checkpoint: d" in diff
    assert "b (4,) vs expected (3,)" in diff
    assert downstream.architecture_diff(want, want) == ""


def _damage_newest(run_dir, tmp_path, keep_manifest: bool = True):
    """A copy of the run whose step 4 has every array data file cut in half."""
    copy = Path(shutil.copytree(run_dir, tmp_path / "damaged"))
    step4 = copy / "checkpoints" / "4"
    if not keep_manifest:
        (step4 / checkpointing.MANIFEST).unlink()
    for data in (step4 / "state").glob("ocdbt.process_*/d/*"):
        data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    return copy


def test_damaged_newest_step_is_skipped_for_a_workdir_and_named_for_a_step_dir(run, tmp_path,
                                                                               caplog):
    copy = _damage_newest(run, tmp_path)
    step_dir, step = downstream.resolve_checkpoint(str(copy))
    assert step == 2 and step_dir.name == "2"
    assert "Skipping checkpoint step 4" in caplog.text and "bytes" in caplog.text
    assert downstream.load_encoder(str(copy)).step == 2
    with pytest.raises(UserError, match=r"checkpoint .*/checkpoints/4 is unreadable \(file "
                       r"state/\S+ has \d+ bytes, \d+ when it was saved\)"):
        downstream.load_encoder(str(copy / "checkpoints" / "4"))
    # Nothing is moved or deleted: evaluation reads a run, it does not repair it.
    assert (copy / "checkpoints" / "4").is_dir()


def test_unreadable_step_without_manifest_is_one_error_naming_it(run, tmp_path):
    copy = _damage_newest(run, tmp_path, keep_manifest=False)
    with pytest.raises(UserError, match=r"checkpoint .*/checkpoints/4 is unreadable \("):
        downstream.load_encoder(str(copy / "checkpoints" / "4"))


def test_knn_job_evaluates_the_newest_intact_step(run, tmp_path, tiny_eval_config):
    copy = _damage_newest(run, tmp_path)
    results = knn_lib.run(tiny_eval_config(str(copy), "knn"), str(tmp_path / "knn"))
    assert results["checkpoint_step"] == 2
