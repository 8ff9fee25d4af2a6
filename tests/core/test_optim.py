"""LARS masks: BN/bias/probe leaves get neither weight decay nor trust scaling."""

import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from simclr_jax.core import optim


def lars_config(**kw) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict(dict(
        optimizer="lars", weight_decay=0.1, lars_trust_coefficient=0.001, momentum=0.9,
        learning_rate=0.5, lr_scaling="linear", batch_size=256, warmup_epochs=0.0))
    c.update(kw)
    return c


def test_lars_first_step_matches_hand_computation():
    params = {
        "conv": {"kernel": jnp.array([[3.0, 4.0]])},          # |w| = 5
        "bn": {"scale": jnp.array([2.0, 2.0]), "bias": jnp.array([1.0, -1.0])},
        "probe": {"kernel": jnp.array([[1.0, 1.0]]), "bias": jnp.array([0.5])},
    }
    grads = {
        "conv": {"kernel": jnp.array([[0.6, 0.8]])},          # |g| = 1
        "bn": {"scale": jnp.array([0.1, 0.2]), "bias": jnp.array([0.3, 0.4])},
        "probe": {"kernel": jnp.array([[0.5, 0.5]]), "bias": jnp.array([0.25])},
    }
    lr = 0.5
    tx = optim.build_optimizer(lars_config(), lambda step: lr)
    updates, _ = tx.update(grads, tx.init(params), params)

    # Decayed + trust-scaled kernel: g' = g + wd w; update = -lr * tc * |w| / |g'| * g'.
    w, g = np.array([[3.0, 4.0]]), np.array([[0.6, 0.8]])
    g_dec = g + 0.1 * w
    expected = -lr * 0.001 * np.linalg.norm(w) / np.linalg.norm(g_dec) * g_dec
    np.testing.assert_allclose(updates["conv"]["kernel"], expected, rtol=1e-5)
    # Everything else: plain -lr * g (no decay, no trust ratio).
    for group, leaf in [("bn", "scale"), ("bn", "bias"), ("probe", "kernel"), ("probe", "bias")]:
        np.testing.assert_allclose(updates[group][leaf], -lr * np.asarray(grads[group][leaf]),
                                   rtol=1e-6)


def test_schedule_warmup_then_cosine_to_zero():
    c = lars_config(learning_rate=0.3, batch_size=512, warmup_epochs=2.0)
    s = optim.learning_rate_schedule(c, steps_per_epoch=10, total_steps=100)
    peak = 0.3 * 512 / 256
    np.testing.assert_allclose(s(10), peak / 2, rtol=1e-6)
    np.testing.assert_allclose(s(20), peak, rtol=1e-6)
    np.testing.assert_allclose(s(60), peak * 0.5 * (1 + np.cos(np.pi * 40 / 80)), rtol=1e-5)
    assert abs(float(s(100))) < 1e-7
    c.lr_scaling = "sqrt"
    c.learning_rate = 0.075
    assert np.isclose(optim.scaled_learning_rate(c), 0.075 * np.sqrt(512))


def test_decay_mask_selects_kernels_outside_probe():
    params = {"block": {"Conv_0": {"kernel": 1}, "BatchNorm_0": {"scale": 1, "bias": 1}},
              "head": {"nl_0_dense": {"kernel": 1}}, "probe": {"kernel": 1, "bias": 1}}
    mask = optim.decay_mask(params)
    assert mask["block"]["Conv_0"]["kernel"] and mask["head"]["nl_0_dense"]["kernel"]
    assert not any([mask["block"]["BatchNorm_0"]["scale"], mask["block"]["BatchNorm_0"]["bias"],
                    mask["probe"]["kernel"], mask["probe"]["bias"]])
    assert isinstance(optax.sgd(0.1), optax.GradientTransformation)
