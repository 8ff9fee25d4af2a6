"""NT-Xent against independent numpy references: the textbook mean over 2N anchors
(reduction='mean') and a transcription of the official TF objective and metrics (the default
reduction='sum'), values and gradients, on 1 and 8 devices."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from simclr_jax.core import losses, parallel


@pytest.mark.parametrize("tau", [0.1, 0.5, 1.0])
def test_value_and_grad_match_naive_numpy(tau, naive_nt_xent, numeric_grad):
    rng = np.random.default_rng(0)
    z1, z2 = rng.normal(size=(6, 5)), rng.normal(size=(6, 5))
    loss, _ = losses.nt_xent(jnp.asarray(z1, jnp.float32), jnp.asarray(z2, jnp.float32), tau,
                             reduction="mean")
    np.testing.assert_allclose(float(loss), naive_nt_xent(z1, z2, tau), rtol=1e-5)

    g1 = jax.grad(lambda a: losses.nt_xent(a, jnp.asarray(z2, jnp.float32), tau,
                                           reduction="mean")[0])(
        jnp.asarray(z1, jnp.float32))
    expected = numeric_grad(lambda a: naive_nt_xent(a, z2, tau), z1)
    np.testing.assert_allclose(np.asarray(g1), expected, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("tau", [0.2, 0.5])
def test_sharded_global_negatives_match_naive_numpy(tau, naive_nt_xent, numeric_grad):
    """8 devices: every anchor must see the negatives of all devices, gradients too."""
    mesh = parallel.make_mesh()
    assert mesh.devices.size == 8
    rng = np.random.default_rng(1)
    z1, z2 = rng.normal(size=(16, 4)), rng.normal(size=(16, 4))
    sharding = parallel.batch_sharded(mesh)
    a = jax.device_put(jnp.asarray(z1, jnp.float32), sharding)
    b = jax.device_put(jnp.asarray(z2, jnp.float32), sharding)
    f = jax.jit(lambda a, b: losses.nt_xent(a, b, tau, mesh=mesh, reduction="mean")[0])
    np.testing.assert_allclose(float(f(a, b)), naive_nt_xent(z1, z2, tau), rtol=1e-5)
    g = jax.jit(jax.grad(f, argnums=(0, 1)))(a, b)
    np.testing.assert_allclose(np.asarray(g[0]),
                               numeric_grad(lambda x: naive_nt_xent(x, z2, tau), z1),
                               rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(np.asarray(g[1]),
                               numeric_grad(lambda x: naive_nt_xent(z1, x, tau), z2),
                               rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("tau", [0.1, 0.5])
def test_default_is_the_official_objective_value_grads_and_metrics(tau, official_nt_xent,
                                                                  numeric_grad):
    """The default reduction is the official loss_a + loss_b (2x the mean over 2N anchors);
    contrast_acc / contrast_entropy are the official ones, on logits_ab."""
    rng = np.random.default_rng(2)
    z1, z2 = rng.normal(size=(7, 5)), rng.normal(size=(7, 5))
    z2[:3] = z1[:3] + 0.3 * rng.normal(size=(3, 5))  # some positives ranked first, some not
    a, b = jnp.asarray(z1, jnp.float32), jnp.asarray(z2, jnp.float32)
    loss, metrics = losses.nt_xent(a, b, tau)
    ref = official_nt_xent(z1, z2, tau)
    np.testing.assert_allclose(float(loss), ref["loss"], rtol=1e-5)
    assert 0 < ref["contrast_acc"] < 1
    np.testing.assert_allclose(float(metrics["contrast_acc"]), ref["contrast_acc"], rtol=1e-6)
    np.testing.assert_allclose(float(metrics["contrast_entropy"]), ref["contrast_entropy"],
                               rtol=1e-5)
    g1, g2 = jax.grad(lambda a, b: losses.nt_xent(a, b, tau)[0], argnums=(0, 1))(a, b)
    np.testing.assert_allclose(
        np.asarray(g1), numeric_grad(lambda x: official_nt_xent(x, z2, tau)["loss"], z1),
        rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(
        np.asarray(g2), numeric_grad(lambda x: official_nt_xent(z1, x, tau)["loss"], z2),
        rtol=1e-3, atol=1e-5)


def test_official_objective_and_metrics_over_eight_devices(official_nt_xent, numeric_grad):
    """Global batch on 8 devices: the official value, gradients and metrics of the whole
    batch (each device's anchors against every device's views)."""
    mesh = parallel.make_mesh()
    rng = np.random.default_rng(4)
    z1, z2 = rng.normal(size=(16, 4)), rng.normal(size=(16, 4))
    z2[:6] = z1[:6] + 0.2 * rng.normal(size=(6, 4))
    sharding = parallel.batch_sharded(mesh)
    a = jax.device_put(jnp.asarray(z1, jnp.float32), sharding)
    b = jax.device_put(jnp.asarray(z2, jnp.float32), sharding)
    f = jax.jit(lambda a, b: losses.nt_xent(a, b, 0.2, mesh=mesh))
    loss, metrics = f(a, b)
    ref = official_nt_xent(z1, z2, 0.2)
    np.testing.assert_allclose(float(loss), ref["loss"], rtol=1e-5)
    np.testing.assert_allclose(float(metrics["contrast_acc"]), ref["contrast_acc"], rtol=1e-6)
    np.testing.assert_allclose(float(metrics["contrast_entropy"]), ref["contrast_entropy"],
                               rtol=1e-5)
    g = jax.jit(jax.grad(lambda a, b: f(a, b)[0]))(a, b)
    np.testing.assert_allclose(
        np.asarray(g), numeric_grad(lambda x: official_nt_xent(x, z2, 0.2)["loss"], z1),
        rtol=1e-3, atol=1e-5)


def test_contrastive_accuracy_counts_positive_ranked_first():
    z = np.eye(4, dtype=np.float32)
    _, metrics = losses.nt_xent(jnp.asarray(z), jnp.asarray(z), 0.1)
    assert float(metrics["contrast_acc"]) == 1.0
    _, metrics = losses.nt_xent(jnp.asarray(z), jnp.asarray(np.roll(z, 1, axis=0)), 0.1)
    assert float(metrics["contrast_acc"]) == 0.0
