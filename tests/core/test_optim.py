"""The official decay rules, against hand computations: LARS decays and trust-scales the kernels,
excludes BN and biases from both, and decays but never trust-scales the supervised head
(`head_supervised`: our fine-tuning classifier and online probe); momentum decays all but BN."""

import jax
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
        "classifier": {"kernel": jnp.array([[2.0, -1.0]]), "bias": jnp.array([0.5])},
    }
    grads = {
        "conv": {"kernel": jnp.array([[0.6, 0.8]])},          # |g| = 1
        "bn": {"scale": jnp.array([0.1, 0.2]), "bias": jnp.array([0.3, 0.4])},
        "probe": {"kernel": jnp.array([[0.5, 0.5]]), "bias": jnp.array([0.25])},
        "classifier": {"kernel": jnp.array([[0.5, -0.5]]), "bias": jnp.array([0.25])},
    }
    lr = 0.5
    tx = optim.build_optimizer(lars_config(), lambda step: lr)
    updates, _ = tx.update(grads, tx.init(params), params)

    # Decayed + trust-scaled kernel: g' = g + wd w; update = -lr * tc * |w| / |g'| * g'.
    w, g = np.array([[3.0, 4.0]]), np.array([[0.6, 0.8]])
    g_dec = g + 0.1 * w
    expected = -lr * 0.001 * np.linalg.norm(w) / np.linalg.norm(g_dec) * g_dec
    np.testing.assert_allclose(updates["conv"]["kernel"], expected, rtol=1e-5)
    # BN and biases: plain -lr * g (no decay, no trust ratio).
    for group, leaf in [("bn", "scale"), ("bn", "bias"), ("probe", "bias"),
                        ("classifier", "bias")]:
        np.testing.assert_allclose(updates[group][leaf], -lr * np.asarray(grads[group][leaf]),
                                   rtol=1e-6)
    # The supervised head's kernel: the official wd * l2_loss term's gradient, then momentum SGD
    # at the full learning rate (no trust ratio): -lr * (g + wd w).
    for group in ("probe", "classifier"):
        g_head = np.asarray(grads[group]["kernel"]) + 0.1 * np.asarray(params[group]["kernel"])
        np.testing.assert_allclose(updates[group]["kernel"], -lr * g_head, rtol=1e-6)


def test_momentum_decays_everything_but_batch_norm():
    """Official non-LARS decay: wd * l2_loss of every variable without batch_normalization in
    its name (biases too); Nesterov momentum 0.9, first step -lr * (1 + m) * (g + wd w)."""
    params = {"conv": {"kernel": jnp.array([3.0, 4.0])},
              "stem_bn": {"scale": jnp.array([2.0]), "bias": jnp.array([1.0])},
              "classifier": {"kernel": jnp.array([1.0]), "bias": jnp.array([0.5])}}
    grads = jax.tree_util.tree_map(lambda p: jnp.full_like(p, 0.5), params)
    tx = optim.build_optimizer(lars_config(optimizer="momentum"), lambda step: 0.5)
    updates, _ = tx.update(grads, tx.init(params), params)
    for group, leaf, decayed in [("conv", "kernel", True), ("stem_bn", "scale", False),
                                 ("stem_bn", "bias", False), ("classifier", "kernel", True),
                                 ("classifier", "bias", True)]:
        g = 0.5 + (0.1 * np.asarray(params[group][leaf]) if decayed else 0.0)
        np.testing.assert_allclose(updates[group][leaf], -0.5 * 1.9 * g, rtol=1e-6)


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


def test_masks_follow_the_official_name_rules():
    params = {"block": {"Conv_0": {"kernel": 1}, "BatchNorm_0": {"scale": 1, "bias": 1},
                        "bn3": {"scale": 1, "bias": 1}, "se": {"reduce": {"kernel": 1, "bias": 1}}},
              "head": {"nl_0_dense": {"kernel": 1}, "nl_0_bn": {"scale": 1, "bias": 1}},
              "probe": {"kernel": 1, "bias": 1}}
    flat = lambda m: {jax.tree_util.keystr(p): v  # noqa: E731
                      for p, v in jax.tree_util.tree_leaves_with_path(m)}
    decay, trust, l2 = (flat(f(params)) for f in (optim.decay_mask, optim.trust_ratio_mask,
                                                  optim.l2_mask))
    kernels = {k for k in decay if k.endswith("['kernel']")}
    assert {k for k, v in decay.items() if v} == kernels
    assert {k for k, v in trust.items() if v} == kernels - {"['probe']['kernel']"}
    assert {k for k, v in l2.items() if not v} == {
        f"['{m}']['{leaf}']" for m in ("block']['BatchNorm_0", "block']['bn3", "head']['nl_0_bn")
        for leaf in ("scale", "bias")}
    assert isinstance(optax.sgd(0.1), optax.GradientTransformation)
