"""The chunked NT-Xent equals the plain one (values, gradients, metrics), on 1 and 8 devices,
and both equal the naive numpy reference.

Tolerance: the two compute the same sums in another order (blocks, online rescaling), f32;
the loss is O(log 2N) ~ 3 and its terms O(1/tau) ~ 10, so a relative 1e-5 on the value and
1e-4 (relative to the largest entry) on gradients is a few hundred float32 ulps, far below any
real difference (a wrong mask or a missing block changes the value at the 1e-2 level).
"""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from simclr_jax.core import chunked_loss, losses, parallel


def _both(z1, z2, tau, chunk, mesh=None, reduction="sum"):
    def plain(a, b):
        return losses.contrastive_loss(a, b, tau, mesh=mesh, reduction=reduction)

    def chunked(a, b):
        return chunked_loss.nt_xent_chunked(a, b, tau, chunk, mesh=mesh, reduction=reduction)

    out = []
    for f in (plain, chunked):
        (value, metrics), grads = jax.jit(jax.value_and_grad(f, argnums=(0, 1), has_aux=True))(
            z1, z2)
        out.append((float(value), {k: float(v) for k, v in metrics.items()},
                    [np.asarray(g) for g in grads]))
    return out


def _assert_same(plain, chunked):
    (v0, m0, g0), (v1, m1, g1) = plain, chunked
    np.testing.assert_allclose(v1, v0, rtol=1e-5)
    np.testing.assert_allclose(m1["contrast_entropy"], m0["contrast_entropy"], rtol=1e-5)
    assert m1["contrast_acc"] == m0["contrast_acc"]
    for a, b in zip(g1, g0, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4 * np.abs(b).max())


@pytest.mark.parametrize("chunk", [1, 3, 7, 24, 100])  # 24 = 2N, 100 > 2N; 7 leaves padding
@pytest.mark.parametrize("tau", [0.1, 0.5])
def test_chunked_equals_plain_and_the_numpy_references(chunk, tau, naive_nt_xent,
                                                        official_nt_xent):
    rng = np.random.default_rng(0)
    z1, z2 = rng.normal(size=(12, 8)), rng.normal(size=(12, 8))
    z1[3] = z2[3] * 2.0  # one sure positive, so contrast_acc is not trivially 0 or 1
    a, b = jnp.asarray(z1, jnp.float32), jnp.asarray(z2, jnp.float32)
    plain, chunked = _both(a, b, tau, chunk)  # the official objective (reduction='sum')
    _assert_same(plain, chunked)
    official = official_nt_xent(z1, z2, tau)
    np.testing.assert_allclose(chunked[0], official["loss"], rtol=1e-5)
    np.testing.assert_allclose(chunked[1]["contrast_entropy"], official["contrast_entropy"],
                               rtol=1e-5)
    assert chunked[1]["contrast_acc"] == pytest.approx(official["contrast_acc"])
    assert 0.0 < chunked[1]["contrast_acc"] < 1.0
    plain, chunked = _both(a, b, tau, chunk, reduction="mean")
    _assert_same(plain, chunked)
    np.testing.assert_allclose(chunked[0], naive_nt_xent(z1, z2, tau), rtol=1e-5)


@pytest.mark.parametrize("chunk", [5, 16, 64])
def test_sharded_chunked_equals_sharded_plain(chunk):
    """8 devices: each device's anchors against every device's views, blocks spanning shard
    boundaries (5), one block per shard pair (16), the whole gathered batch in one block (64);
    gradients flow back through the gather to the device that made each view."""
    mesh = parallel.make_mesh()
    assert mesh.devices.size == 8
    rng = np.random.default_rng(1)
    z1, z2 = rng.normal(size=(32, 6)), rng.normal(size=(32, 6))
    sharding = parallel.batch_sharded(mesh)
    a = jax.device_put(jnp.asarray(z1, jnp.float32), sharding)
    b = jax.device_put(jnp.asarray(z2, jnp.float32), sharding)
    plain, chunked = _both(a, b, 0.2, chunk, mesh=mesh)
    _assert_same(plain, chunked)
    single = _both(jnp.asarray(z1, jnp.float32), jnp.asarray(z2, jnp.float32), 0.2, chunk)[1]
    _assert_same(single, chunked)  # 8 devices = 1 device


def test_train_step_with_chunked_loss_equals_plain(tiny_config):
    """config.loss_chunk_size reaches the loss: the step's loss and gradients are unchanged."""
    from simclr_jax.core import parallel, train
    from simclr_jax.models import build_model

    c = tiny_config(batch_size=16)
    model = build_model(c, num_classes=10)
    variables = parallel.run_once(lambda k: model.init(k, jnp.zeros((2, 8, 8, 3)), train=False),
                                  jax.random.PRNGKey(0))
    x = jax.random.uniform(jax.random.PRNGKey(1), (32, 8, 8, 3))
    labels = jnp.zeros((32,), jnp.int32)
    out = []
    for chunk in (0, 6):
        c.loss_chunk_size = chunk
        f = jax.jit(partial(train.loss_and_grads, model=model,
                            config=c.copy_and_resolve_references(), mesh=None))
        grads, metrics, _ = f(variables["params"], variables["batch_stats"], x, labels)
        out.append((float(metrics["loss"]), jax.tree_util.tree_leaves(grads)))
    np.testing.assert_allclose(out[1][0], out[0][0], rtol=1e-5)
    for a, b in zip(out[1][1], out[0][1], strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4 * float(jnp.abs(b).max()) + 1e-8)


def test_chunked_loss_needs_nt_xent(tiny_config):
    from simclr_jax.config import validate
    from simclr_jax.errors import UserError

    with pytest.raises(UserError, match="loss_chunk_size"):
        validate(tiny_config(loss_chunk_size=64, loss="nt_logistic"))
    with pytest.raises(UserError, match="loss_chunk_size"):
        validate(tiny_config(loss_chunk_size=-1))
