"""Feature banks: sharded over the devices (N / devices rows each), every example once, equal to
an independent forward pass; the on-disk cache is numpy-readable, reused bitwise by a rerun and
recomputed with a warning when another checkpoint or config wrote it; training batches are
gathered exactly."""

import json
import logging
from pathlib import Path

import jax
import numpy as np
import pytest

from simclr_jax.core import parallel
from simclr_jax.data import sources
from simclr_jax.evals import feature_cache, features, jobs, pretrained


@pytest.fixture(scope="module")
def digits(pretrained_run, tiny_eval_config):
    """(pretrained step 4, resolved eval config, test Source) on the session's run."""
    pre = pretrained.load(pretrained_run)
    config = jobs.resolve_config(tiny_eval_config(pretrained_run), pre.config)
    return pre, config, sources.open_source(config, config.eval_split, for_eval=True)


def _host_features(bank: features.Bank) -> tuple[np.ndarray, np.ndarray]:
    """(features, labels) in example order, gathered to the host (test-sized banks only)."""
    feats, labels = np.asarray(bank.features), np.asarray(bank.labels)
    flat = bank.index.reshape(-1)
    order = np.argsort(np.where(flat >= 0, flat, np.iinfo(np.int64).max))[:bank.num_examples]
    return feats.reshape(-1, feats.shape[-1])[order], labels.reshape(-1)[order]


def test_the_bank_is_sharded_and_equals_an_independent_forward_pass(digits):
    pre, config, test = digits
    mesh = parallel.make_mesh()
    bank = features.compute(pre, test, image_size=8, global_batch=64, mesh=mesh)
    assert bank.features.shape == (5, 64, pre.width)  # 300 examples: 5 batches, last padded
    shards = bank.features.addressable_shards
    assert len(shards) == 8 and {s.data.shape for s in shards} == {(5, 8, pre.width)}
    assert sorted(bank.index[bank.index >= 0].tolist()) == list(range(300))
    assert int(np.asarray(bank.mask).sum()) == 300
    got, labels = _host_features(bank)
    np.testing.assert_array_equal(labels, test.labels)
    # Independent: the encoder on the whole split at once, on one device (8 px: no crop).
    variables = jax.device_get(pre.variables)
    want = np.asarray(jax.jit(lambda v, x: pre.module.apply(v, x, train=False))(
        variables, test.images.astype(np.float32) / 255.0))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_the_cache_is_numpy_readable_and_reused_bitwise(digits, tmp_path, monkeypatch):
    pre, config, test = digits
    mesh = parallel.make_mesh()
    spec = jobs.feature_cache(str(tmp_path), config, pre, "eval")
    first = features.compute(pre, test, image_size=8, global_batch=64, mesh=mesh, cache=spec)
    directory = Path(spec.directory)
    manifest = json.loads((directory / "manifest.json").read_text())
    assert manifest["key"]["checkpoint_step"] == 4 and manifest["layout"]["num_examples"] == 300
    # What a user reads with numpy: one shard per process, rows with index >= 0 are examples.
    feats = np.load(directory / "features-00000-of-00001.npy")
    index = np.load(directory / "index-00000-of-00001.npy")
    labels = np.load(directory / "labels-00000-of-00001.npy")
    want, want_labels = _host_features(first)
    np.testing.assert_array_equal(feats[index >= 0][np.argsort(index[index >= 0])], want)
    np.testing.assert_array_equal(labels[index >= 0][np.argsort(index[index >= 0])],
                                  want_labels)

    def no_forward(*args):
        raise AssertionError("the encoder ran although the cache was valid")

    monkeypatch.setattr(features, "_feature_fn", no_forward)
    again = features.compute(pre, test, image_size=8, global_batch=64, mesh=mesh, cache=spec)
    for a, b in ((first.features, again.features), (first.labels, again.labels),
                 (first.mask, again.mask)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(first.index, again.index)


def test_a_cache_of_another_checkpoint_or_config_is_recomputed_with_a_warning(
        digits, pretrained_run, tmp_path, caplog):
    pre4, config, test = digits
    pre2 = pretrained.load(f"{pretrained_run}/checkpoints/2")
    mesh = parallel.make_mesh()
    stale = features.compute(pre2, test, image_size=8, global_batch=64, mesh=mesh,
                             cache=jobs.feature_cache(str(tmp_path), config, pre2, "eval"))
    fresh = features.compute(pre4, test, image_size=8, global_batch=64, mesh=mesh)
    with caplog.at_level(logging.WARNING):
        got = features.compute(pre4, test, image_size=8, global_batch=64, mesh=mesh,
                               cache=jobs.feature_cache(str(tmp_path), config, pre4, "eval"))
    warned = [r.getMessage() for r in caplog.records if "Feature cache" in r.getMessage()]
    assert len(warned) == 1 and "checkpoint_step: 2 (cache) vs 4 (this job)" in warned[0]
    np.testing.assert_array_equal(np.asarray(got.features), np.asarray(fresh.features))
    assert not np.array_equal(np.asarray(got.features), np.asarray(stale.features))
    # Another preprocessing (image size) under the same checkpoint: the same.
    config.image_size = 12
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        features.compute(pre4, test, image_size=12, global_batch=64, mesh=mesh,
                         cache=jobs.feature_cache(str(tmp_path), config, pre4, "eval"))
    assert any("image_size: 8 (cache) vs 12" in r.getMessage() for r in caplog.records)
    assert feature_cache.read_manifest(jobs.feature_cache(
        str(tmp_path), config, pre4, "eval").directory)["key"]["image_size"] == 12


def test_training_batches_are_gathered_exactly_from_the_sharded_bank():
    rng = np.random.default_rng(0)
    h, labels = rng.normal(size=(37, 5)).astype(np.float32), rng.integers(0, 9, 37)
    mesh = parallel.make_mesh()
    bank = features.from_host(h, labels, 9, 16, mesh)  # 3 batches of 16, last one padded
    examples = rng.permutation(37)[:24]
    slots = jax.device_put(bank.slots(examples).astype(np.int32), parallel.replicated(mesh))
    batch = features.gather_fn(mesh, 16)(bank.features, bank.labels, slots)
    assert batch["image"].sharding.spec == jax.sharding.PartitionSpec("data")
    np.testing.assert_array_equal(np.asarray(batch["image"]), h[examples])
    np.testing.assert_array_equal(np.asarray(batch["label"]), labels[examples])
