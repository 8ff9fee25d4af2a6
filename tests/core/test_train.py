"""The sharded step equals the 1-device step: global negatives + cross-replica BN + aug keys."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from simclr_jax.augment import views
from simclr_jax.augment.recipes import Augmentation
from simclr_jax.core import optim, parallel, train
from simclr_jax.cpu.conv import Im2ColConv
from simclr_jax.models import build_model


def leaves(tree):
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]


@pytest.fixture(scope="module")
def setup(tiny_config):
    config = tiny_config(batch_size=16, blur_prob=0.5, image_size=16)
    model = build_model(config, num_classes=10)
    tx = optim.build_optimizer(config, lambda s: 0.1)
    # Host copies: every test places its own device arrays (the real step donates them).
    state = jax.device_get(parallel.run_once(
        partial(train.create_train_state, model, tx, image_size=config.image_size),
        jax.random.PRNGKey(0)))
    rng = np.random.default_rng(0)
    batch = {"view1": rng.integers(0, 256, (16, 16, 16, 3), dtype=np.uint8),
             "view2": rng.integers(0, 256, (16, 16, 16, 3), dtype=np.uint8),
             "label": rng.integers(0, 10, (16,), dtype=np.int32)}
    return config, model, tx, state, batch


def run_on(mesh, config, model, state, batch):
    """Augment + loss + grads + BN update on `mesh`, inputs placed like the real step."""
    gb = parallel.global_batch(mesh, batch)
    rep = parallel.replicated(mesh)
    params, stats = jax.device_put((state.params, state.batch_stats), rep)

    @jax.jit
    def f(params, stats, gb):
        x = views.augment_views(Augmentation.from_config(config), jnp.int32(3), gb)
        labels = jnp.repeat(gb["label"], 2)
        grads, metrics, new_stats = train.loss_and_grads(params, stats, x, labels, model=model,
                                                         config=config, mesh=mesh)
        return x, grads, metrics, new_stats

    return jax.device_get(f(params, stats, gb))


def test_one_vs_eight_devices_same_loss_grads_and_bn_stats(setup):
    config, model, _, state, batch = setup
    one = run_on(parallel.make_mesh(jax.devices()[:1]), config, model, state, batch)
    eight = run_on(parallel.make_mesh(jax.devices()), config, model, state, batch)
    x1, g1, m1, s1 = one
    x8, g8, m8, s8 = eight
    np.testing.assert_allclose(x1, x8, atol=1e-6)  # augmentation keyed per example, not device
    np.testing.assert_allclose(m1["loss"], m8["loss"], rtol=1e-5)
    # Bounds set for the mean loss, doubled: the official objective (loss_reduction='sum') is
    # twice the mean, so are its gradients and their summation-order noise.
    for a, b in zip(leaves(g1), leaves(g8), strict=True):
        np.testing.assert_allclose(a, b, atol=2e-5, rtol=2e-4)
    for a, b in zip(leaves(s1), leaves(s8), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)
    # BN stats really moved (else the comparison above proves nothing).
    assert any(np.abs(a - b).max() > 1e-3
               for a, b in zip(leaves(s1), leaves(state.batch_stats), strict=True))


def test_per_device_bn_would_differ(setup):
    """Sanity check that the comparison can fail: BN stats of one shard differ from global."""
    config, model, _, state, batch = setup
    half = {k: v[:8] for k, v in batch.items()}
    mesh = parallel.make_mesh(jax.devices()[:1])
    _, _, _, s_half = run_on(mesh, config, model, state, half)
    _, _, _, s_full = run_on(mesh, config, model, state, batch)
    assert max(np.abs(a - b).max() for a, b in zip(leaves(s_half), leaves(s_full),
                                                   strict=True)) > 1e-4


def test_full_train_step_runs_sharded_and_updates(setup):
    config, model, tx, state, batch = setup
    mesh = parallel.make_mesh()
    schedule = lambda s: 0.1  # noqa: E731
    step = train.make_train_step(model, tx, schedule, config, mesh)
    state8 = jax.device_put(state, parallel.replicated(mesh))
    before = leaves(state8.params)
    new, metrics = step(state8, parallel.global_batch(mesh, batch))
    assert int(new.step) == 1
    assert np.isfinite(float(metrics["loss"]))
    assert 0.0 <= float(metrics["probe_acc"]) <= 1.0
    assert any(np.abs(a - b).max() > 0 for a, b in zip(before, leaves(new.params), strict=True))


def test_online_probe_does_not_change_encoder_gradients(setup):
    config, _, _, state, batch = setup
    mesh = parallel.make_mesh(jax.devices()[:1])
    with_probe = run_on(mesh, config, build_model(config, num_classes=10), state, batch)
    no_probe_params = {k: v for k, v in state.params.items() if k != "probe"}
    no_probe = run_on(mesh, config, build_model(config, num_classes=0),
                      state.replace(params=no_probe_params), batch)
    g_probe, g_plain = with_probe[1], no_probe[1]
    assert "probe" in g_probe and "probe" not in g_plain
    for a, b in zip(leaves(g_probe["encoder"]), leaves(g_plain["encoder"]), strict=True):
        np.testing.assert_array_equal(a, b)


def test_adam_bfloat16_step_runs_sharded_and_keeps_float32(setup):
    """The full jitted step with another optimizer (momentum's update: test_optim.py) and bf16
    compute: finite loss, f32 loss and parameters."""
    config, _, _, _, batch = setup
    config = config.copy_and_resolve_references()
    config.optimizer, config.dtype = "adam", "bfloat16"
    model = build_model(config, num_classes=10)
    tx = optim.build_optimizer(config, lambda s: 0.01)
    mesh = parallel.make_mesh()
    state = train.init_state_on_mesh(model, tx, config, mesh)
    step = train.make_train_step(model, tx, lambda s: 0.01, config, mesh)
    new, metrics = step(state, parallel.global_batch(mesh, batch))
    assert np.isfinite(float(metrics["loss"])) and metrics["loss"].dtype == jnp.float32
    assert all(x.dtype == jnp.float32 for x in jax.tree_util.tree_leaves(new.params))


def test_bfloat16_first_losses_equal_float32_within_rounding(tiny_config):
    """dtype=bfloat16 (bf16 convolutions and dense layers, f32 params, BN statistics and loss)
    gives the f32 losses at each of the first three steps of an f32 trajectory, within what
    bf16 rounding explains; its loss, grads and BN statistics stay f32.

    Both dtypes are evaluated at the same parameters at each step (the f32 run's; SGD at lr
    0.1 moves them between steps), so the difference is rounding alone, not two trajectories
    drifting apart. Tolerance, derived: bf16 keeps 8 significant bits, so each rounding is off
    by at most u = 2^-9 relative. z passes through L = 22 rounded layers (20 convolutions + 2
    dense, BN re-normalising in between); independent roundings add in quadrature, sqrt(L) u =
    0.009 relative in z, so each cosine similarity moves by <= 2 x 0.009 and each logit by
    <= 0.018 / tau = 0.09 (tau = 0.2); NT-Xent (a log-sum-exp minus one logit) moves by at most
    twice the largest logit change, 0.18 per anchor mean, and the official objective is the sum
    of the two directions' means (2x): 0.36. A wrong cast (bf16 loss or statistics, f16 overflow)
    breaks this by O(1); the difference must also be non-zero, or bf16 never ran.
    """
    fns = {}
    for dtype in ("float32", "bfloat16"):
        # im2col: the tolerance is derived for direct convolutions; Winograd's transforms
        # round in bf16 too (measured 0.24 at step 3 under the default conv_impl=auto on CPU).
        config = tiny_config(batch_size=16, dtype=dtype)
        model = build_model(config, num_classes=10, conv=Im2ColConv)
        fns[dtype] = jax.jit(partial(train.loss_and_grads, model=model, config=config,
                                     mesh=None))
    variables = parallel.run_once(lambda k: model.init(k, jnp.zeros((2, 8, 8, 3)), train=False),
                                  jax.random.PRNGKey(0))
    params, stats = variables["params"], variables["batch_stats"]
    rng = np.random.default_rng(0)
    diffs = []
    for _ in range(3):
        x = jnp.asarray(rng.uniform(size=(32, 8, 8, 3)), jnp.float32)
        labels = jnp.asarray(rng.integers(0, 10, (32,)), jnp.int32)
        grads, m32, new_stats = fns["float32"](params, stats, x, labels)
        g16, m16, stats16 = fns["bfloat16"](params, stats, x, labels)
        assert m16["loss"].dtype == jnp.float32
        assert all(a.dtype == jnp.float32 for a in jax.tree_util.tree_leaves((g16, stats16)))
        diffs.append(abs(float(m16["loss"]) - float(m32["loss"])))
        params = jax.tree_util.tree_map(lambda p, g: p - 0.1 * g, params, grads)
        stats = new_stats
    assert max(diffs) < 0.36, diffs
    assert max(diffs) > 0, "bf16 gave bit-identical losses: was it applied?"
