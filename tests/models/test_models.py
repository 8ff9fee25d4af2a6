"""ResNet v1 and projection head structure (against the paper's architecture facts, the official
code's parameter counts and a numpy transcription of its fixed padding)."""

from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from simclr_jax.cpu.conv import Im2ColConv
from simclr_jax.models import ProjectionHead, ResNet
from simclr_jax.models.resnet import ConvMaker, fixed_padding
from simclr_jax.models.simclr import param_count


def init(module, x):
    return module.init(jax.random.PRNGKey(0), x, train=False)


@pytest.mark.parametrize("depth,shortcut,expected", [
    (18, "when_needed", 11_689_512 - 513_000), (50, "when_needed", 25_557_032 - 2_049_000),
    # The official ResNet-18 adds group 1's projection: a 1x1 64->64 conv and its BN.
    (18, "every_group", 11_689_512 - 513_000 + 64 * 64 + 2 * 64),
    (50, "every_group", 25_557_032 - 2_049_000)])
def test_resnet_parameter_counts_match_torchvision(depth, shortcut, expected):
    """torchvision resnet18/50 totals (11,689,512 / 25,557,032) minus their 1000-way fc; the
    legacy shortcut rule is torchvision's."""
    v = jax.eval_shape(lambda: init(ResNet(depth=depth, shortcut=shortcut),
                                    jnp.zeros((1, 224, 224, 3))))
    assert param_count(v["params"]) == expected


@pytest.mark.parametrize("depth,sk,cifar,expected", [
    # The sums of the official TF1 graphs' base_model variables (gamma, beta, kernels; no
    # moving statistics), tests/fixtures/official_simclr/: R18 CIFAR stem, R50 1x, R50 1x SK.
    (18, 0.0, True, 11_173_056), (50, 0.0, False, 23_508_032), (50, 0.0625, False, 35_215_584)])
def test_parameter_counts_match_the_official_graphs(depth, sk, cifar, expected):
    size = 32 if cifar else 224
    v = jax.eval_shape(lambda: init(ResNet(depth=depth, sk_ratio=sk, cifar_stem=cifar),
                                    jnp.zeros((1, size, size, 3))))
    assert param_count(v["params"]) == expected


def _numpy_conv(x: np.ndarray, w: np.ndarray, stride: int, pads: tuple[int, int]) -> np.ndarray:
    """Zero-pad H and W by pads (before, after), then a VALID strided convolution."""
    x = np.pad(x, ((0, 0), pads, pads, (0, 0)))
    k = w.shape[0]
    out = (x.shape[1] - k) // stride + 1
    y = np.zeros((x.shape[0], out, out, w.shape[-1]))
    for i in range(out):
        for j in range(out):
            patch = x[:, i * stride:i * stride + k, j * stride:j * stride + k, :]
            y[:, i, j] = np.einsum("bhwc,hwco->bo", patch, w)
    return y


@pytest.mark.parametrize("impl", ["xla", "im2col"])
@pytest.mark.parametrize("kernel,stride,size", [(3, 2, 8), (3, 2, 7), (7, 2, 16), (1, 2, 8),
                                                (3, 1, 8)])
def test_fixed_padding_is_the_official_one(impl, kernel, stride, size):
    """The official conv2d_fixed_padding: strided convs pad (k-1)//2 before and the rest after,
    then 'VALID' (a 3x3/2 conv then samples pixels 0, 2, 4, ... like the 1x1/2 shortcut);
    stride 1 is 'SAME'. Legacy 'same' differs on even sizes."""
    x = np.asarray(jax.random.normal(jax.random.PRNGKey(1), (2, size, size, 3)))
    conv = ConvMaker(partial(nn.Conv, use_bias=False) if impl == "xla" else Im2ColConv, "fixed")
    module = conv(4, kernel, stride, name=None)
    params = module.init(jax.random.PRNGKey(0), x)
    w = np.asarray(params["params"]["kernel"])
    total = kernel - 1
    expected = _numpy_conv(x, w, stride, (total // 2, total - total // 2))
    np.testing.assert_allclose(np.asarray(module.apply(params, x)), expected, atol=1e-4)
    if stride > 1 and kernel > 1 and size % 2 == 0:
        legacy = ConvMaker(conv.cls, "same")(4, kernel, stride, name=None)
        assert not np.allclose(np.asarray(legacy.apply(params, x)), expected, atol=1e-3)
    assert fixed_padding(3) == ((1, 1), (1, 1)) and fixed_padding(7) == ((3, 3), (3, 3))


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


def test_selective_kernel_and_squeeze_excite_structure():
    """As the official code builds them: the ResNet-D stem (3x3/2 to 32w, 3x3 to 32w, 3x3 to
    64w), an avg-pooled 1x1 shortcut, one 3x3 conv to 2 x filters split into the two branches,
    fuse width max(int(filters * sk_ratio), 32), mixing conv to 2 x filters; SE reduces to
    int(filters * se_ratio) with biases."""
    v = jax.eval_shape(lambda: init(  # shapes only: traced, not run (full width, 33 s eager)
        ResNet(depth=50, width_multiplier=1.0, sk_ratio=0.0625, se_ratio=0.25),
        jnp.zeros((1, 64, 64, 3))))["params"]
    assert [v[f"stem_conv{s}"]["kernel"].shape for s in ("1", "2", "")] == [
        (3, 3, 3, 32), (3, 3, 32, 32), (3, 3, 32, 64)]
    sk = v["block4_0"]["sk"]
    assert sk["conv"]["kernel"].shape == (3, 3, 512, 1024)
    assert sk["fuse_conv"]["kernel"].shape == (1, 1, 512, 32)
    assert sk["mix_conv"]["kernel"].shape == (1, 1, 32, 1024)
    assert "conv2" not in v["block4_0"] and "bn2" not in v["block4_0"]
    assert v["block1_0"]["shortcut_conv"]["kernel"].shape == (1, 1, 64, 256)
    se = v["block2_1"]["se"]
    assert se["reduce"]["kernel"].shape == (1, 1, 512, 32) and se["reduce"]["bias"].shape == (32,)
    assert se["expand"]["kernel"].shape == (1, 1, 32, 512)
@pytest.mark.parametrize("depth", [18])  # bottleneck blocks: the same nn.remat wrapper
def test_remat_blocks_same_loss_and_grads(depth):
    """remat='blocks' recomputes each block in the backward pass: the same parameters (names,
    shapes), outputs, gradients and BN statistics as without it. The recomputation repeats the
    forward's arithmetic, so the only freedom is XLA fusing it differently: 1e-6 relative."""
    x = jax.random.normal(jax.random.PRNGKey(3), (4, 16, 16, 3))
    plain = ResNet(depth=depth, width_multiplier=0.125, cifar_stem=True)
    remat = ResNet(depth=depth, width_multiplier=0.125, cifar_stem=True, remat="blocks")
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
