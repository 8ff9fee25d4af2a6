"""The CPU package's convolutions (im2col, Winograd, oneDNN, chunked) against XLA's, alone and
in a ResNet with the same variables; the conv_impl names."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from simclr_jax.cpu import conv
from simclr_jax.cpu.conv import Im2ColConv, conv_class
from simclr_jax.models import ResNet
from simclr_jax.models.resnet import fixed_padding


def init(module, x):
    return module.init(jax.random.PRNGKey(0), x, train=False)


@pytest.mark.parametrize("padding", ["SAME", "fixed"])
@pytest.mark.parametrize("kernel,strides,size", [(3, 1, 8), (3, 2, 8), (3, 2, 7), (1, 2, 8),
                                                 (7, 2, 16)])
def test_im2col_conv_equals_xla_conv(kernel, strides, size, padding):
    """Same params, same output and gradients as nn.Conv(padding=..., use_bias=False)."""
    x = jax.random.normal(jax.random.PRNGKey(1), (2, size, size, 5))
    pad = fixed_padding(kernel) if padding == "fixed" else "SAME"
    ref = nn.Conv(6, (kernel, kernel), (strides, strides), padding=pad, use_bias=False)
    ours = Im2ColConv(6, (kernel, kernel), (strides, strides), padding=pad)
    params = ref.init(jax.random.PRNGKey(0), x)
    np.testing.assert_allclose(ours.apply(params, x), ref.apply(params, x), atol=1e-5)
    g_ref = jax.grad(lambda p: (ref.apply(p, x) ** 2).sum())(params)
    g_ours = jax.grad(lambda p: (ours.apply(p, x) ** 2).sum())(params)
    np.testing.assert_allclose(g_ours["params"]["kernel"], g_ref["params"]["kernel"],
                               rtol=1e-4, atol=1e-4)
    assert jax.tree_util.tree_structure(ours.init(jax.random.PRNGKey(0), x)) == \
        jax.tree_util.tree_structure(params)


@pytest.mark.parametrize("kernel,strides", [(3, 2), (7, 2), (3, 1)])
@pytest.mark.parametrize("min_bytes,n_chunks", [(1, 6), (1 << 30, 1)])
def test_chunked_im2col_conv_equals_xla_conv(monkeypatch, kernel, strides, min_bytes, n_chunks):
    """The batch in chunks (forced to 1 image each; real runs: >= 512 KiB) and in one: same
    output, input and kernel gradients as XLA's convolution, jitted."""

    monkeypatch.setattr(conv, "_MIN_CHUNK_BYTES", min_bytes)
    x = jax.random.normal(jax.random.PRNGKey(1), (6, 9, 9, 5))
    k = jax.random.normal(jax.random.PRNGKey(2), (kernel, kernel, 5, 4))
    pad = fixed_padding(kernel)
    assert conv._num_chunks(x.shape, k) == n_chunks

    def xla_conv(x, k):
        return jax.lax.conv_general_dilated(x, k, (strides,) * 2, pad,
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                            precision=jax.lax.Precision.HIGHEST)

    def value_and_grads(f):
        y, vjp = jax.vjp(f, x, k)
        return y, *vjp(jnp.cos(y))

    ours = jax.jit(lambda: value_and_grads(
        lambda a, b: conv.chunked_im2col_conv(a, b, (strides,) * 2, pad)))()
    for a, b in zip(ours, value_and_grads(xla_conv), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4 * float(jnp.abs(b).max()))


R18, R18_SAME = dict(depth=18, cifar_stem=True), dict(depth=18, cifar_stem=True, padding="same",
                                                    shortcut="when_needed")
R50_SK_SE = dict(depth=50, sk_ratio=0.0625, se_ratio=0.25)


# R50-SK-SE with im2col is left out (70 s of compile): its strided and 1x1 convs are im2col's
# under winograd too, and im2col's stride-1 3x3 convs are covered by the R18s.
@pytest.mark.parametrize("arch,impl", [(R18, "im2col"), (R18, "winograd"), (R18_SAME, "im2col"),
                                       (R18_SAME, "winograd"), (R50_SK_SE, "winograd"),
                                       (R18_SAME, "onednn"), (R50_SK_SE, "onednn")])
@pytest.mark.slow(17)
def test_resnet_cpu_convs_match_xla_with_same_variables(arch, impl):
    x = jax.random.normal(jax.random.PRNGKey(2), (2, 32, 32, 3))
    xla = ResNet(width_multiplier=0.125, **arch)
    col = ResNet(width_multiplier=0.125, conv=conv_class(impl), **arch)
    v = init(xla, x)
    np.testing.assert_allclose(col.apply(v, x, train=False), xla.apply(v, x, train=False),
                               atol=1e-4)


def test_an_unknown_conv_impl_is_refused_not_silently_xla():
    with pytest.raises(ValueError, match="conv_impl must be one of"):
        conv_class("winogard")
    assert conv_class("xla") is nn.Conv
