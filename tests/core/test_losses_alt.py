"""NT-Logistic and margin triplet against naive numpy loops (values, gradients, 8 devices)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from simclr_jax.core import losses, parallel


def naive_loss(z1: np.ndarray, z2: np.ndarray, tau: float, kind: str, margin: float = 0.5,
               normalize: bool = True) -> float:
    """Textbook per-anchor loops; views interleaved 2k, 2k+1; negatives = the other 2N-2."""
    z = np.empty((2 * len(z1), z1.shape[1]), np.float64)
    z[0::2], z[1::2] = z1, z2
    if normalize:
        z = z / np.linalg.norm(z, axis=1, keepdims=True)
    sigmoid = lambda t: 1.0 / (1.0 + np.exp(-t))  # noqa: E731
    total = 0.0
    for i in range(len(z)):
        j = i + 1 if i % 2 == 0 else i - 1
        pos = z[i] @ z[j] / tau
        negs = [z[i] @ z[k] / tau for k in range(len(z)) if k not in (i, j)]
        if kind == "nt_logistic":
            total += -np.log(sigmoid(pos)) - np.mean([np.log(sigmoid(-s)) for s in negs])
        else:
            total += np.mean([max(s - pos + margin, 0.0) for s in negs])
    return total / len(z)


CASES = [("nt_logistic", 0.2, True), ("nt_logistic", 0.5, False),
         ("margin_triplet", 1.0, True), ("margin_triplet", 0.5, False)]


@pytest.mark.parametrize("kind,tau,normalize", CASES)
def test_value_and_grad_match_naive_numpy(kind, tau, normalize, numeric_grad):
    rng = np.random.default_rng(0)
    z1, z2 = rng.normal(size=(5, 4)) * 0.5, rng.normal(size=(5, 4)) * 0.5

    def f(a, b):
        return losses.contrastive_loss(a, b, tau, normalize=normalize, loss=kind,
                                       margin=0.4, reduction="mean")[0]

    a, b = jnp.asarray(z1, jnp.float32), jnp.asarray(z2, jnp.float32)
    expected = naive_loss(z1, z2, tau, kind, 0.4, normalize)
    np.testing.assert_allclose(float(f(a, b)), expected, rtol=1e-5)
    g1 = jax.grad(f)(a, b)
    np.testing.assert_allclose(
        np.asarray(g1), numeric_grad(lambda x: naive_loss(x, z2, tau, kind, 0.4, normalize), z1),
        rtol=1e-3, atol=1e-5)


def test_nt_xent_through_dispatcher_matches_naive(naive_nt_xent):
    rng = np.random.default_rng(3)
    z1, z2 = rng.normal(size=(6, 5)), rng.normal(size=(6, 5))
    loss, _ = losses.contrastive_loss(jnp.asarray(z1, jnp.float32), jnp.asarray(z2, jnp.float32),
                                      0.3, reduction="mean")
    np.testing.assert_allclose(float(loss), naive_nt_xent(z1, z2, 0.3), rtol=1e-5)


@pytest.mark.parametrize("kind", ["nt_logistic", "margin_triplet"])
def test_sharded_global_negatives_match_naive_numpy(kind, numeric_grad):
    """8 devices: each anchor's negatives come from every device; gradients flow back."""
    mesh = parallel.make_mesh()
    assert mesh.devices.size == 8
    rng = np.random.default_rng(1)
    z1, z2 = rng.normal(size=(16, 4)), rng.normal(size=(16, 4))
    sharding = parallel.batch_sharded(mesh)
    a = jax.device_put(jnp.asarray(z1, jnp.float32), sharding)
    b = jax.device_put(jnp.asarray(z2, jnp.float32), sharding)
    f = jax.jit(lambda a, b: losses.contrastive_loss(a, b, 0.5, mesh=mesh, loss=kind,
                                                     reduction="mean")[0])
    np.testing.assert_allclose(float(f(a, b)), naive_loss(z1, z2, 0.5, kind), rtol=1e-5)
    # The default reduction, the official objective's scale, is twice the mean.
    summed = losses.contrastive_loss(a, b, 0.5, mesh=mesh, loss=kind)[0]
    np.testing.assert_allclose(float(summed), 2 * naive_loss(z1, z2, 0.5, kind), rtol=1e-5)
    g = jax.jit(jax.grad(f, argnums=(0, 1)))(a, b)
    np.testing.assert_allclose(np.asarray(g[1]),
                               numeric_grad(lambda x: naive_loss(z1, x, 0.5, kind), z2),
                               rtol=1e-3, atol=1e-5)


def test_unknown_loss_name_is_rejected():
    z = jnp.ones((2, 3))
    with pytest.raises(ValueError, match="unknown loss 'infonce'"):
        losses.contrastive_loss(z, z, 0.5, loss="infonce")
