"""NT-Xent against an independent naive numpy implementation (values and gradients)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from simclr_jax.core import losses, parallel


@pytest.mark.parametrize("tau", [0.1, 0.5, 1.0])
def test_value_and_grad_match_naive_numpy(tau, naive_nt_xent, numeric_grad):
    rng = np.random.default_rng(0)
    z1, z2 = rng.normal(size=(6, 5)), rng.normal(size=(6, 5))
    loss, _ = losses.nt_xent(jnp.asarray(z1, jnp.float32), jnp.asarray(z2, jnp.float32), tau)
    np.testing.assert_allclose(float(loss), naive_nt_xent(z1, z2, tau), rtol=1e-5)

    g1 = jax.grad(lambda a: losses.nt_xent(a, jnp.asarray(z2, jnp.float32), tau)[0])(
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
    f = jax.jit(lambda a, b: losses.nt_xent(a, b, tau, mesh=mesh)[0])
    np.testing.assert_allclose(float(f(a, b)), naive_nt_xent(z1, z2, tau), rtol=1e-5)
    g = jax.jit(jax.grad(f, argnums=(0, 1)))(a, b)
    np.testing.assert_allclose(np.asarray(g[0]),
                               numeric_grad(lambda x: naive_nt_xent(x, z2, tau), z1),
                               rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(np.asarray(g[1]),
                               numeric_grad(lambda x: naive_nt_xent(z1, x, tau), z2),
                               rtol=1e-3, atol=1e-5)


def test_contrastive_accuracy_counts_positive_ranked_first():
    z = np.eye(4, dtype=np.float32)
    _, metrics = losses.nt_xent(jnp.asarray(z), jnp.asarray(z), 0.1)
    assert float(metrics["contrast_acc"]) == 1.0
    _, metrics = losses.nt_xent(jnp.asarray(z), jnp.asarray(np.roll(z, 1, axis=0)), 0.1)
    assert float(metrics["contrast_acc"]) == 0.0
