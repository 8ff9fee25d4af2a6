"""The official checkpoints' variables map one to one onto our Flax tree (against the variable
listings written by the official code, tests/fixtures/official_simclr/)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from simclr_jax.config import base_config
from simclr_jax.models import build_model
from simclr_jax.models import tf_checkpoint as tc

CASES = [  # listing, TF2?, expected architecture, variables of the network
    ("tf1_r18_cifar10_pretrain.tsv", False,
     tc.Architecture(18, 1.0, True, num_proj_layers=3, proj_out_dim=128), 119),
    ("tf1_r50_1x_sk0_finetune.tsv", False,
     tc.Architecture(50, 1.0, False, num_classes=10), 281),
    ("tf1_r50_1x_sk1_finetune.tsv", False,
     tc.Architecture(50, 1.0, False, sk_ratio=0.0625, num_classes=10), 387),
    ("tf2_r18_cifar10_checkpoint.tsv", True, tc.Architecture(18, 1.0, True, num_classes=10), 121),
    ("tf2_r50_1x_sk1_checkpoint.tsv", True,
     tc.Architecture(50, 1.0, False, sk_ratio=0.0625, num_classes=10), 387),
]


def flax_shapes(arch: tc.Architecture) -> dict[tuple, tuple]:
    """(collection, *path) -> shape of every leaf of our SimCLRModel for `arch`."""
    c = base_config()
    c.resnet_depth, c.width_multiplier, c.sk_ratio, c.se_ratio = (
        arch.depth, arch.width_multiplier, arch.sk_ratio, arch.se_ratio)
    c.image_size = 32 if arch.cifar_stem else 224
    c.proj_head_mode, c.num_proj_layers, c.proj_out_dim = (
        arch.proj_head_mode, arch.num_proj_layers, arch.proj_out_dim)
    model = build_model(c, num_classes=arch.num_classes)
    x = jax.ShapeDtypeStruct((1, c.image_size, c.image_size, 3), jnp.float32)
    v = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x, train=False), x)
    return {(col, *(k.key for k in path)): tuple(leaf.shape)
            for col in v for path, leaf in jax.tree_util.tree_flatten_with_path(v[col])[0]}


@pytest.mark.parametrize("listing,tf2,expected,count", CASES, ids=[c[0] for c in CASES])
def test_official_listing_maps_one_to_one_onto_the_flax_tree(listing, tf2, expected, count,
                                                             official_listing):
    shapes = official_listing(listing)
    names = tc.model_variables(shapes)
    assert tc.tf2_format(shapes) == tf2
    # What is left out is only optimizer slots and counters.
    left_out = set(shapes) - set(names.values())
    assert all("Momentum" in n or "OPTIMIZER_SLOT" in n or n.split("/")[0] in (
        "global_step", "save_counter", "_CHECKPOINTABLE_OBJECT_GRAPH") for n in left_out)
    network = {k: shapes[v] for k, v in names.items()}
    assert len(network) == count
    arch = tc.infer_architecture(network, tf2=tf2)
    assert arch == expected
    # Every checkpoint variable is used exactly once, and fills exactly one leaf of our model,
    # every leaf is filled, with the same shape.
    values = {k: np.zeros(s, np.float32) for k, s in network.items()}
    tree = tc.to_flax(arch, values, tf2=tf2)
    filled = {(col, *(k.key for k in path)): leaf.shape
              for col in tree for path, leaf in jax.tree_util.tree_flatten_with_path(tree[col])[0]}
    assert len(filled) == len(values) == count
    assert filled == flax_shapes(arch)


@pytest.mark.parametrize("listing", ["tf1_r50_1x_sk0_finetune.tsv", "tf1_r50_1x_sk1_finetune.tsv"])
def test_layout_walks_the_official_creation_order(listing, official_listing):
    """The listings are in the official code's creation order: shortcut before the block's own
    convs, SK's mixing conv without a BN, heads last."""
    shapes = official_listing(listing)
    arch = tc.infer_architecture(shapes)
    assert [(v.tf1, v.shape) for v in tc.layout(arch)] == list(shapes.items())


def test_reference_r18_projection_shortcut_in_every_group(official_listing):
    """ResNet-18's first group has a 1x1 64->64 projection (conv2d_1), created before the
    block's convs; our block1_0 has it too."""
    shapes = official_listing("tf1_r18_cifar10_pretrain.tsv")
    assert shapes["base_model/conv2d_1/kernel"] == (1, 1, 64, 64)
    network = {k: shapes[v] for k, v in tc.model_variables(shapes).items()}
    named = {v.tf1: v for v in tc.layout(tc.infer_architecture(network))}
    assert named["base_model/conv2d_1/kernel"].path == ("encoder", "block1_0", "shortcut_conv",
                                                        "kernel")
    assert named["base_model/batch_normalization_3/gamma"].path == (
        "encoder", "block1_0", "bn2", "scale")  # the zero-init BN of the first residual branch


def test_hand_checked_tf2_keys(official_listing):
    """A few TF2 keys placed by reading tf2/resnet.py and tf2/model.py, not by the walk."""
    shapes = official_listing("tf2_r50_1x_sk1_checkpoint.tsv")
    names = tc.model_variables(shapes)
    network = {k: shapes[v] for k, v in names.items()}
    arch = tc.infer_architecture(network, tf2=True)
    values = {k: np.full(s, i, np.float32) for i, (k, s) in enumerate(network.items())}
    tree = tc.to_flax(arch, values, tf2=True)
    p = "model/resnet_model/"
    checks = {
        # SK stem: list indices count the ReLU-less BN layers and the Identity / MaxPool.
        f"{p}initial_conv_relu_max_pool/4/conv2d/kernel": ("params", "stem_conv", "kernel"),
        f"{p}initial_conv_relu_max_pool/6/bn/moving_variance": ("batch_stats", "stem_bn", "var"),
        # Group 1's ResNet-D projection: [AvgPool, conv, bn]; group 2's [FixedPadding, AvgPool,
        # conv, bn].
        f"{p}block_groups/0/layers/0/projection_layers/1/conv2d/kernel":
            ("params", "block1_0", "shortcut_conv", "kernel"),
        f"{p}block_groups/1/layers/0/projection_layers/3/bn/gamma":
            ("params", "block2_0", "shortcut_bn", "scale"),
        f"{p}block_groups/0/layers/1/conv_relu_dropblock_layers/3/conv2d_1/kernel":
            ("params", "block1_1", "sk", "mix_conv", "kernel"),
        f"{p}block_groups/3/layers/2/conv_relu_dropblock_layers/6/bn/beta":
            ("params", "block4_2", "bn3", "bias"),
    }
    for key, (col, *path) in checks.items():
        node = tree[col]["encoder"]
        for k in path:
            node = node[k]
        np.testing.assert_array_equal(node, values[key])
    np.testing.assert_array_equal(
        tree["params"]["probe"]["bias"], values["model/supervised_head/linear_layer/dense/bias"])
    np.testing.assert_array_equal(
        tree["params"]["head"]["nl_2_bn"]["scale"],
        values["model/_projection_head/linear_layers/2/bn_relu/bn/gamma"])


def test_a_missing_variable_or_another_shape_is_named(official_listing):
    shapes = official_listing("tf1_r18_cifar10_pretrain.tsv")
    network = {k: shapes[v] for k, v in tc.model_variables(shapes).items()}
    missing = dict(network)
    del missing["base_model/batch_normalization_7/moving_mean"]
    with pytest.raises(tc.CheckpointMismatch,
                       match="missing base_model/batch_normalization_7/moving_mean"):
        tc.infer_architecture(missing)
    reshaped = {**network, "base_model/conv2d_12/kernel": (3, 3, 128, 255)}
    with pytest.raises(tc.CheckpointMismatch, match=r"base_model/conv2d_12/kernel has shape "
                       r"\(3, 3, 128, 255\), expected \(3, 3, 128, 256\)"):
        tc.infer_architecture(reshaped)
    with pytest.raises(tc.CheckpointMismatch, match="no ResNet stem convolution"):
        tc.infer_architecture({"foo/kernel": (3, 3)})


def test_ema_copy_and_memory_are_chosen_or_left_out():
    names = ["base_model/conv2d/kernel", "ema_model/base_model/conv2d/kernel",
             "head_supervised/linear_layer/dense/kernel", "memory/queue", "global_step",
             "base_model/conv2d/kernel/Momentum"]
    assert tc.model_variables(names) == {
        "base_model/conv2d/kernel": "base_model/conv2d/kernel",
        "head_supervised/linear_layer/dense/kernel": "head_supervised/linear_layer/dense/kernel"}
    assert tc.model_variables(names, ema=True) == {
        "base_model/conv2d/kernel": "ema_model/base_model/conv2d/kernel",
        "head_supervised/linear_layer/dense/kernel": "head_supervised/linear_layer/dense/kernel"}


@pytest.mark.parametrize("arch", [
    tc.Architecture(34, 0.25, False, se_ratio=0.25, proj_head_mode="linear", num_proj_layers=1,
                    proj_out_dim=64),
    tc.Architecture(101, 0.125, True, sk_ratio=0.0625, se_ratio=0.25, num_proj_layers=2,
                    num_classes=1000),
    tc.Architecture(152, 0.5, False, sk_ratio=0.25, proj_head_mode="none", num_proj_layers=1),
])
def test_other_architectures_round_trip(arch):
    """For architectures without an official listing: the layout fills our model exactly, and
    its TF1 names and TF2 keys each identify the architecture again (TF2's 'linear' head mode
    is broken in the official code, so only TF1 has one)."""
    for tf2 in (False, True) if arch.proj_head_mode != "linear" else (False,):
        named = {(v.tf2 if tf2 else v.tf1): v.shape for v in tc.layout(arch)}
        assert tc.infer_architecture(named, tf2=tf2) == arch
    values = {v.tf1: np.zeros(v.shape, np.float32) for v in tc.layout(arch)}
    tree = tc.to_flax(arch, values)
    filled = {(col, *(k.key for k in path)): leaf.shape
              for col in tree for path, leaf in jax.tree_util.tree_flatten_with_path(tree[col])[0]}
    assert filled == flax_shapes(arch)
