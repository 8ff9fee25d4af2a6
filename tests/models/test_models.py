"""ResNet v1 and projection head structure (against the paper's architecture facts)."""

from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from simclr_jax.models import ProjectionHead, ResNet
from simclr_jax.models.conv import Im2ColConv
from simclr_jax.models.simclr import param_count


def init(module, x):
    return module.init(jax.random.PRNGKey(0), x, train=False)


@pytest.mark.parametrize("depth,expected",
                         [(18, 11_689_512 - 513_000), (50, 25_557_032 - 2_049_000)])
def test_resnet_parameter_counts_match_torchvision(depth, expected):
    """torchvision resnet18/50 totals (11,689,512 / 25,557,032) minus their 1000-way fc."""
    v = jax.eval_shape(lambda: init(ResNet(depth=depth), jnp.zeros((1, 224, 224, 3))))
    assert param_count(v["params"]) == expected


def test_cifar_stem_width_and_output():
    model = ResNet(depth=18, width_multiplier=0.25, cifar_stem=True)
    v = init(model, jnp.zeros((2, 32, 32, 3)))
    assert v["params"]["stem_conv"]["kernel"].shape == (3, 3, 3, 16)
    h = model.apply(v, jnp.ones((2, 32, 32, 3)), train=False)
    assert h.shape == (2, model.out_width) == (2, 128)
    assert ResNet(depth=50, width_multiplier=2).out_width == 4096


def test_no_conv_bias_and_zero_init_last_bn_gamma():
    v = init(ResNet(depth=50, width_multiplier=0.125), jnp.zeros((1, 64, 64, 3)))
    flat = jax.tree_util.tree_leaves_with_path(v["params"])
    names = ["/".join(getattr(k, "key", str(k)) for k in path) for path, _ in flat]
    assert not any("conv" in n and n.endswith("bias") for n in names)
    block = v["params"]["block1_0"]
    assert np.all(block["bn3"]["scale"] == 0)  # last BN of the residual branch
    assert np.all(block["bn1"]["scale"] == 1) and np.all(block["shortcut_bn"]["scale"] == 1)


def test_projection_head_modes():
    h = jnp.ones((4, 32))
    for mode, layers, n_out in [("none", 2, 1), ("linear", 2, 2), ("nonlinear", 3, 4)]:
        head = ProjectionHead(mode=mode, num_layers=layers, out_dim=8)
        v = init(head, h)
        outs = head.apply(v, h, train=False)
        assert len(outs) == n_out
        if mode != "none":
            assert outs[-1].shape == (4, 8)
    v = init(ProjectionHead(mode="nonlinear", num_layers=3, out_dim=8), h)["params"]
    assert v["nl_0_dense"]["kernel"].shape == (32, 32)  # hidden width = input width
    assert "bias" not in v["nl_0_dense"]
    assert "bias" in v["nl_0_bn"] and "bias" not in v["nl_2_bn"]  # last BN without centre


@pytest.mark.parametrize("kernel,strides,size", [(3, 1, 8), (3, 2, 8), (3, 2, 7), (1, 2, 8),
                                                 (7, 2, 16)])
def test_im2col_conv_equals_xla_conv(kernel, strides, size):
    """Same params, same output and gradients as nn.Conv(padding='SAME', use_bias=False)."""
    x = jax.random.normal(jax.random.PRNGKey(1), (2, size, size, 5))
    ref = nn.Conv(6, (kernel, kernel), (strides, strides), padding="SAME", use_bias=False)
    ours = Im2ColConv(6, (kernel, kernel), (strides, strides))
    params = ref.init(jax.random.PRNGKey(0), x)
    np.testing.assert_allclose(ours.apply(params, x), ref.apply(params, x), atol=1e-5)
    g_ref = jax.grad(lambda p: (ref.apply(p, x) ** 2).sum())(params)
    g_ours = jax.grad(lambda p: (ours.apply(p, x) ** 2).sum())(params)
    np.testing.assert_allclose(g_ours["params"]["kernel"], g_ref["params"]["kernel"],
                               rtol=1e-4, atol=1e-4)
    assert jax.tree_util.tree_structure(ours.init(jax.random.PRNGKey(0), x)) == \
        jax.tree_util.tree_structure(params)


@pytest.mark.parametrize("impl", ["im2col", "winograd"])
def test_resnet_cpu_convs_match_xla_with_same_variables(impl):
    x = jax.random.normal(jax.random.PRNGKey(2), (2, 32, 32, 3))
    xla = ResNet(depth=18, width_multiplier=0.125, cifar_stem=True, conv_impl="xla")
    col = ResNet(depth=18, width_multiplier=0.125, cifar_stem=True, conv_impl=impl)
    v = init(xla, x)
    np.testing.assert_allclose(col.apply(v, x, train=False), xla.apply(v, x, train=False),
                               atol=1e-4)


@pytest.mark.parametrize("depth", [18, 50])
def test_remat_blocks_same_loss_and_grads(depth):
    """remat='blocks' recomputes each block in the backward pass: the same parameters (names,
    shapes), outputs, gradients and BN statistics as without it. The recomputation repeats the
    forward's arithmetic, so the only freedom is XLA fusing it differently: 1e-6 relative."""
    x = jax.random.normal(jax.random.PRNGKey(3), (4, 16, 16, 3))
    plain = ResNet(depth=depth, width_multiplier=0.125, cifar_stem=True, conv_impl="xla")
    remat = ResNet(depth=depth, width_multiplier=0.125, cifar_stem=True, conv_impl="xla",
                   remat="blocks")
    v = init(plain, x)
    assert jax.tree_util.tree_structure(init(remat, x)) == jax.tree_util.tree_structure(v)

    def loss(model, params):
        h, updates = model.apply({"params": params, "batch_stats": v["batch_stats"]}, x,
                                 train=True, mutable=["batch_stats"])
        return jnp.sum(jnp.sin(h)), updates["batch_stats"]

    (l0, s0), g0 = jax.jit(jax.value_and_grad(partial(loss, plain), has_aux=True))(v["params"])
    (l1, s1), g1 = jax.jit(jax.value_and_grad(partial(loss, remat), has_aux=True))(v["params"])
    np.testing.assert_allclose(float(l1), float(l0), rtol=1e-6)
    for a, b in zip(jax.tree_util.tree_leaves((g1, s1)), jax.tree_util.tree_leaves((g0, s0)),
                    strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6 * float(jnp.abs(b).max()))
    assert any(float(jnp.abs(g).max()) > 0 for g in jax.tree_util.tree_leaves(g0))
