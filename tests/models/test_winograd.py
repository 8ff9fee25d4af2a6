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

from simclr_jax.models.conv import WinogradConv, conv_class
from simclr_jax.models.winograd import winograd_conv3x3


def _xla_conv(x, kernel):
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                        precision=jax.lax.Precision.HIGHEST)


def _close(a, b):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5 * float(jnp.abs(b).max()))


@pytest.mark.parametrize("m", [4])  # the tile size conv_impl=winograd uses
@pytest.mark.parametrize("size", [8, 7])  # 7: tiles overhang the image, cropped/zero-padded
def test_winograd_value_and_grads_equal_xla_conv(m, size):
    kx, kk, kd = jax.random.split(jax.random.PRNGKey(0), 3)
    x = jax.random.normal(kx, (2, size, size + 1, 5))  # H != W
    kernel = jax.random.normal(kk, (3, 3, 5, 6))
    dy = jax.random.normal(kd, (2, size, size + 1, 6))
    out, vjp = jax.vjp(lambda a, k: winograd_conv3x3(a, k, m), x, kernel)
    ref, vjp_ref = jax.vjp(_xla_conv, x, kernel)
    _close(out, ref)
    for ours, theirs in zip(vjp(dy), vjp_ref(dy), strict=True):
        _close(ours, theirs)


def test_winograd_module_same_params_as_nn_conv_and_falls_back_for_strided():
    """Same 'kernel' parameter as nn.Conv (checkpoints move freely); 3x3 stride 2 and 1x1
    convolutions take the im2col path and still equal nn.Conv."""
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 8, 8, 4))
    for k, s in [(3, 1), (3, 2), (1, 1)]:
        ref = nn.Conv(6, (k, k), (s, s), padding="SAME", use_bias=False)
        params = ref.init(jax.random.PRNGKey(0), x)
        ours = WinogradConv(6, (k, k), (s, s))
        assert jax.tree_util.tree_structure(ours.init(jax.random.PRNGKey(0), x)) == \
            jax.tree_util.tree_structure(params)
        _close(ours.apply(params, x), ref.apply(params, x))
    assert conv_class("winograd") is WinogradConv and conv_class("xla") is nn.Conv
