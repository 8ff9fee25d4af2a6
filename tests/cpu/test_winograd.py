"""Winograd F(m x m, 3 x 3) equals XLA's convolution: output, input and kernel gradients.

Tolerance: Winograd computes the same sums through transforms with coefficients up to 8 (F(4, 3)
A^T) and 1/24 (G), so each output carries float32 rounding of a few times eps (1.2e-7) times
those constants times the sum of |terms|: 1e-5 relative to the largest entry, far below what a
wrong transform entry, tile offset or padding changes (O(1) of the entry).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from simclr_jax.cpu.conv import WinogradConv, conv_class
from simclr_jax.cpu.winograd import winograd_conv3x3, xla_winograd_conv3x3


def _xla_conv(x, kernel):
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                        precision=jax.lax.Precision.HIGHEST)


def _close(a, b):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5 * float(jnp.abs(b).max()))


CONVS = {"winograd": lambda a, k: winograd_conv3x3(a, k, 4),  # the tile size conv_impl uses
         "xla+winograd kernel grad": xla_winograd_conv3x3}


@pytest.mark.parametrize("conv", CONVS)
@pytest.mark.parametrize("size", [8, 7])  # 7: tiles overhang the image, cropped/zero-padded
def test_winograd_value_and_grads_equal_xla_conv(conv, size):
    kx, kk, kd = jax.random.split(jax.random.PRNGKey(0), 3)
    x = jax.random.normal(kx, (2, size, size + 1, 5))  # H != W
    kernel = jax.random.normal(kk, (3, 3, 5, 6))
    dy = jax.random.normal(kd, (2, size, size + 1, 6))
    out, vjp = jax.vjp(CONVS[conv], x, kernel)
    ref, vjp_ref = jax.vjp(_xla_conv, x, kernel)
    _close(out, ref)
    for ours, theirs in zip(vjp(dy), vjp_ref(dy), strict=True):
        _close(ours, theirs)


def test_winograd_module_same_params_as_nn_conv_and_falls_back_for_strided():
    """Same 'kernel' parameter as nn.Conv (checkpoints move freely); 3x3 stride 2 and 1x1
    convolutions take the im2col path and still equal nn.Conv; 3x3 stride 1 with few channels
    (XLA + Winograd kernel gradient) and more (Winograd) too."""
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 8, 8, 4))
    for k, s, features in [(3, 1, 6), (3, 1, 17), (3, 2, 6), (1, 1, 6)]:
        ref = nn.Conv(features, (k, k), (s, s), padding="SAME", use_bias=False)
        params = ref.init(jax.random.PRNGKey(0), x)
        ours = WinogradConv(features, (k, k), (s, s))
        assert jax.tree_util.tree_structure(ours.init(jax.random.PRNGKey(0), x)) == \
            jax.tree_util.tree_structure(params)
        _close(ours.apply(params, x), ref.apply(params, x))
    assert conv_class("winograd") is WinogradConv and conv_class("xla") is nn.Conv


@pytest.mark.parametrize("conv", CONVS)
@pytest.mark.parametrize("batch,sharded", [(6, False), (16, True)])
def test_chunked_winograd_equals_xla_conv(monkeypatch, conv, batch, sharded):
    """The batch in chunks (here forced to 1-2 images each; real runs: >= 2 MiB): the chunks
    are put back in order, the kernel gradient sums over all of them, and a batch sharded over
    the 8 simulated devices gives the same values."""
    from simclr_jax.core import parallel
    from simclr_jax.cpu import winograd

    monkeypatch.setattr(winograd, "_MIN_CHUNK_BYTES", 1)
    kx, kk, kd = jax.random.split(jax.random.PRNGKey(2), 3)
    x = jax.random.normal(kx, (batch, 8, 9, 5))
    kernel = jax.random.normal(kk, (3, 3, 5, 6))
    dy = jax.random.normal(kd, (batch, 8, 9, 6))
    assert winograd.num_chunks(x.shape, 6, 4) > 1 and winograd.num_chunks(dy.shape, 5, 4) > 1
    if sharded:
        x, dy = (jax.device_put(a, parallel.batch_sharded(parallel.make_mesh())) for a in (x, dy))

    @jax.jit
    def value_and_grads(x, kernel, dy):
        out, vjp = jax.vjp(CONVS[conv], x, kernel)
        return out, *vjp(dy)

    ref, vjp_ref = jax.vjp(_xla_conv, x, kernel)
    for ours, theirs in zip(value_and_grads(x, kernel, dy), (ref, *vjp_ref(dy)), strict=True):
        _close(ours, theirs)
