"""The official SimCLR checkpoints' variables, mapped one to one onto this project's Flax tree.

Pure bookkeeping (numpy, no TF, no JAX arrays): `layout(arch)` walks the official network in the
official code's layer-creation order and lists, per variable, its TF1 name, its TF2 checkpoint
key, where it lives in the SimCLRModel variables and its shape. `infer_architecture` finds the
architecture whose layout has exactly a checkpoint's names and shapes, and `to_flax` fills the
Flax tree, every variable used once. evals/import_tf_lib.py reads the checkpoint and writes ours.

TF1 (`resnet.py`, `model_util.py`; the format of gs://simclr-checkpoints): everything of the
ResNet is under `base_model/`, where `tf.layers` numbers convs (`conv2d`, `conv2d_1`, ...) and
BNs (`batch_normalization`, ...) with two counters in creation order; a block group's first
block creates its projection shortcut before its own convs; SK units have one conv more than BNs
(the mixing conv), SE layers two convs with biases. Heads: `head_contrastive/nl_K/dense/kernel`
with `.../nl_K/batch_normalization/...` (the last BN has no beta), `head_supervised/linear_layer/
dense/{kernel,bias}`. TF2 (`tf2/resnet.py`, `tf2/model.py`, written by tf.train.Checkpoint):
object paths, `model/resnet_model/block_groups/G/layers/B/...` with list indices.
"""

import dataclasses
import re

import numpy as np

from simclr_jax.models.resnet import SK_MIN_DIM, STAGE_SIZES, scaled_width

TF2_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"
# TF BN variable -> (Flax collection, leaf)
BN_LEAVES = {"gamma": ("params", "scale"), "beta": ("params", "bias"),
             "moving_mean": ("batch_stats", "mean"), "moving_variance": ("batch_stats", "var")}


@dataclasses.dataclass(frozen=True)
class Architecture:
    """What a checkpoint's shapes determine (the config keys it sets in brackets)."""

    depth: int  # resnet_depth
    width_multiplier: float
    cifar_stem: bool  # image_size <= 32
    sk_ratio: float = 0.0
    se_ratio: float = 0.0
    proj_head_mode: str = "nonlinear"  # 'none' when the checkpoint has no head_contrastive
    num_proj_layers: int = 3
    proj_out_dim: int = 128
    num_classes: int = 0  # head_supervised's classes (0: none) -> the online probe


@dataclasses.dataclass(frozen=True)
class Variable:
    """One checkpoint variable and its place in the SimCLRModel variables."""

    tf1: str  # e.g. base_model/conv2d_3/kernel (without the ema_model/ prefix)
    tf2: str  # e.g. model/resnet_model/block_groups/0/layers/0/... (without TF2_SUFFIX)
    collection: str  # 'params' or 'batch_stats'
    path: tuple[str, ...]  # e.g. ('encoder', 'block1_0', 'conv1', 'kernel')
    shape: tuple[int, ...]


class _Walker:
    """Creation-order walk: one conv counter and one BN counter under base_model/, as tf.layers
    names them."""

    def __init__(self):
        self.convs = self.bns = 0
        self.vars: list[Variable] = []

    @staticmethod
    def _suffix(i: int) -> str:
        return "" if i == 0 else f"_{i}"

    def conv(self, path: tuple[str, ...], shape: tuple[int, ...], tf2: str, bias: bool = False):
        name = f"base_model/conv2d{self._suffix(self.convs)}"
        self.convs += 1
        self.vars.append(Variable(f"{name}/kernel", f"{tf2}/kernel", "params",
                                  ("encoder", *path, "kernel"), shape))
        if bias:
            self.vars.append(Variable(f"{name}/bias", f"{tf2}/bias", "params",
                                      ("encoder", *path, "bias"), (shape[-1],)))

    def bn(self, path: tuple[str, ...], channels: int, tf2: str):
        name = f"base_model/batch_normalization{self._suffix(self.bns)}"
        self.bns += 1
        for tf_leaf, (collection, leaf) in BN_LEAVES.items():
            self.vars.append(Variable(f"{name}/{tf_leaf}", f"{tf2}/{tf_leaf}", collection,
                                      ("encoder", *path, leaf), (channels,)))


def _stem(w: _Walker, arch: Architecture) -> int:
    width = scaled_width(64, arch.width_multiplier)
    tf2 = "model/resnet_model/initial_conv_relu_max_pool"
    if arch.cifar_stem:
        w.conv(("stem_conv",), (3, 3, 3, width), f"{tf2}/0/conv2d")
        w.bn(("stem_bn",), width, f"{tf2}/2/bn")
    elif arch.sk_ratio > 0:  # ResNet-D stem
        half = max(1, width // 2)
        w.conv(("stem_conv1",), (3, 3, 3, half), f"{tf2}/0/conv2d")
        w.bn(("stem_bn1",), half, f"{tf2}/1/bn")
        w.conv(("stem_conv2",), (3, 3, half, half), f"{tf2}/2/conv2d")
        w.bn(("stem_bn2",), half, f"{tf2}/3/bn")
        w.conv(("stem_conv",), (3, 3, half, width), f"{tf2}/4/conv2d")
        w.bn(("stem_bn",), width, f"{tf2}/6/bn")
    else:
        w.conv(("stem_conv",), (7, 7, 3, width), f"{tf2}/0/conv2d")
        w.bn(("stem_bn",), width, f"{tf2}/2/bn")
    return width


def _se(w: _Walker, block: str, filters: int, channels: int, arch: Architecture, tf2: str):
    reduced = max(1, int(filters * arch.se_ratio))
    w.conv((block, "se", "reduce"), (1, 1, channels, reduced), f"{tf2}/se_reduce", bias=True)
    w.conv((block, "se", "expand"), (1, 1, reduced, channels), f"{tf2}/se_expand", bias=True)


def _projection(w: _Walker, block: str, cin: int, cout: int, strides: int,
                arch: Architecture, tf2: str):
    # TF2 list: [FixedPadding (strides > 1), AvgPool] before the conv with ResNet-D (SK nets).
    first = 0 if arch.sk_ratio <= 0 else (2 if strides > 1 else 1)
    w.conv((block, "shortcut_conv"), (1, 1, cin, cout), f"{tf2}/{first}/conv2d")
    w.bn((block, "shortcut_bn"), cout, f"{tf2}/{first + 1}/bn")


def _basic(w: _Walker, block: str, cin: int, filters: int, strides: int, projection: bool,
           arch: Architecture, tf2: str) -> int:
    if projection:
        _projection(w, block, cin, filters, strides, arch, f"{tf2}/shortcut_layers")
    w.conv((block, "conv1"), (3, 3, cin, filters), f"{tf2}/conv2d_bn_layers/0/conv2d")
    w.bn((block, "bn1"), filters, f"{tf2}/conv2d_bn_layers/1/bn")
    w.conv((block, "conv2"), (3, 3, filters, filters), f"{tf2}/conv2d_bn_layers/2/conv2d")
    w.bn((block, "bn2"), filters, f"{tf2}/conv2d_bn_layers/3/bn")
    if arch.se_ratio > 0:
        _se(w, block, filters, filters, arch, f"{tf2}/se_layer")
    return filters


def _bottleneck(w: _Walker, block: str, cin: int, filters: int, strides: int, projection: bool,
                arch: Architecture, tf2: str) -> int:
    out = 4 * filters
    if projection:
        _projection(w, block, cin, out, strides, arch, f"{tf2}/projection_layers")
    layers = f"{tf2}/conv_relu_dropblock_layers"
    w.conv((block, "conv1"), (1, 1, cin, filters), f"{layers}/0/conv2d")
    w.bn((block, "bn1"), filters, f"{layers}/1/bn")
    if arch.sk_ratio > 0:
        mid = max(int(filters * arch.sk_ratio), SK_MIN_DIM)
        sk = f"{layers}/3"
        w.conv((block, "sk", "conv"), (3, 3, filters, 2 * filters),
               f"{sk}/conv2d_fixed_padding/conv2d")
        w.bn((block, "sk", "bn"), 2 * filters, f"{sk}/batch_norm_relu/bn")
        w.conv((block, "sk", "fuse_conv"), (1, 1, filters, mid), f"{sk}/conv2d_0")
        w.bn((block, "sk", "fuse_bn"), mid, f"{sk}/batch_norm_relu_1/bn")
        w.conv((block, "sk", "mix_conv"), (1, 1, mid, 2 * filters), f"{sk}/conv2d_1")
        last, se = 5, 8
    else:
        w.conv((block, "conv2"), (3, 3, filters, filters), f"{layers}/3/conv2d")
        w.bn((block, "bn2"), filters, f"{layers}/4/bn")
        last, se = 6, 9
    w.conv((block, "conv3"), (1, 1, filters, out), f"{layers}/{last}/conv2d")
    w.bn((block, "bn3"), out, f"{layers}/{last + 1}/bn")
    if arch.se_ratio > 0:
        _se(w, block, filters, out, arch, f"{layers}/{se}")
    return out


def _heads(arch: Architecture, width: int) -> list[Variable]:
    out = []
    tf2 = "model/_projection_head/linear_layers"

    def layer(tf1: str, tf2_layer: str, flax: str, cin: int, cout: int, last: bool):
        out.append(Variable(f"{tf1}/dense/kernel", f"{tf2_layer}/dense/kernel", "params",
                            ("head", f"{flax}_dense", "kernel"), (cin, cout)))
        for tf_leaf, (collection, leaf) in BN_LEAVES.items():
            if tf_leaf == "beta" and last:  # the last BN has no centre
                continue
            out.append(Variable(f"{tf1}/batch_normalization/{tf_leaf}",
                                f"{tf2_layer}/bn_relu/bn/{tf_leaf}", collection,
                                ("head", f"{flax}_bn", leaf), (cout,)))

    if arch.proj_head_mode == "linear":
        layer("head_contrastive/l_0", f"{tf2}/0", "linear", width, arch.proj_out_dim, True)
    elif arch.proj_head_mode == "nonlinear":
        for j in range(arch.num_proj_layers):
            last = j == arch.num_proj_layers - 1
            layer(f"head_contrastive/nl_{j}", f"{tf2}/{j}", f"nl_{j}", width,
                  arch.proj_out_dim if last else width, last)
    if arch.num_classes:
        for leaf, shape in (("kernel", (width, arch.num_classes)), ("bias", (arch.num_classes,))):
            out.append(Variable(f"head_supervised/linear_layer/dense/{leaf}",
                                f"model/supervised_head/linear_layer/dense/{leaf}", "params",
                                ("probe", leaf), shape))
    return out


def layout(arch: Architecture) -> list[Variable]:
    """Every variable of the official network `arch` (no optimizer slots), in creation order."""
    w = _Walker()
    channels = _stem(w, arch)
    block_fn = _basic if arch.depth < 50 else _bottleneck
    for stage, blocks in enumerate(STAGE_SIZES[arch.depth]):
        filters = scaled_width(64 * 2**stage, arch.width_multiplier)
        for b in range(blocks):
            strides = 2 if stage > 0 and b == 0 else 1
            tf2 = f"model/resnet_model/block_groups/{stage}/layers/{b}"
            channels = block_fn(w, f"block{stage + 1}_{b}", channels, filters, strides, b == 0,
                                arch, tf2)
    return w.vars + _heads(arch, channels)


# ---- Reading a checkpoint's variable list -----------------------------------------------------

class CheckpointMismatch(ValueError):
    """A checkpoint that is no official SimCLR network: names the variables at fault."""


# Optimizer slots, counters, the object graph, and the memory (queue) variables of the released
# SimCLRv2 checkpoints: none is part of the network.
_SKIPPED = re.compile(r"(^|/)Momentum$|^global_step$|^save_counter$|^_CHECKPOINTABLE_OBJECT_GRAPH"
                      r"|/\.OPTIMIZER_SLOT/|(^|/)memory|(^|/)ExponentialMovingAverage$")


def tf2_format(names) -> bool:
    """Whether the variable names are TF2 object-checkpoint keys (else TF1 saver names)."""
    return any(n.endswith(TF2_SUFFIX) for n in names)


def model_variables(names, ema: bool = False) -> dict[str, str]:
    """{network variable name: checkpoint name} of a checkpoint's variable names: TF1 names
    without ema_model/, TF2 keys without the suffix. Optimizer slots, counters, memory queues
    and the copy not asked for (the EMA one unless `ema`, else the plain one) are left out."""
    tf2 = tf2_format(names)
    out = {}
    for name in names:
        if tf2:
            key = name[: -len(TF2_SUFFIX)] if name.endswith(TF2_SUFFIX) else None
            if key is not None and not _SKIPPED.search(name) and not _SKIPPED.search(key):
                out[key] = name
            continue
        if _SKIPPED.search(name):
            continue
        is_ema = name.startswith("ema_model/")
        if name.startswith("head_supervised/"):  # the released ones keep one, without a prefix
            out[name] = name
        elif is_ema == ema:
            out[name[len("ema_model/"):] if is_ema else name] = name
    return out


def _named(arch: Architecture, tf2: bool) -> dict[str, Variable]:
    return {(v.tf2 if tf2 else v.tf1): v for v in layout(arch)}


def _shape(shapes: dict[str, tuple], *candidates: str) -> tuple | None:
    return next((shapes[c] for c in candidates if c in shapes), None)


def _conv_index(name: str) -> int:
    m = re.fullmatch(r"base_model/conv2d(?:_(\d+))?/kernel", name)
    return -1 if m is None else int(m.group(1) or 0)


def infer_architecture(shapes: dict[str, tuple], tf2: bool = False) -> Architecture:
    """The architecture whose layout has exactly these names and shapes (model_variables'
    output, TF1 names or TF2 keys); CheckpointMismatch naming what is missing, left over or
    of another shape for the closest candidate."""
    if tf2:
        stem = "model/resnet_model/initial_conv_relu_max_pool/{}/conv2d/kernel"
        first, second, last_stem = (_shape(shapes, stem.format(i)) for i in (0, 2, 4))
        dense = "model/_projection_head/linear_layers/{}/dense/kernel"
        linear = None
        sup = _shape(shapes, "model/supervised_head/linear_layer/dense/kernel")
    else:
        first, second, last_stem = (_shape(shapes, f"base_model/conv2d{s}/kernel")
                                    for s in ("", "_1", "_2"))
        dense = "head_contrastive/nl_{}/dense/kernel"
        linear = _shape(shapes, "head_contrastive/l_0/dense/kernel")
        sup = _shape(shapes, "head_supervised/linear_layer/dense/kernel")
    if first is None or len(first) != 4:
        raise CheckpointMismatch(
            "no ResNet stem convolution found (expected base_model/conv2d/kernel, TF1, or "
            "model/resnet_model/initial_conv_relu_max_pool/0/conv2d/kernel, TF2): not an "
            "official SimCLR checkpoint")
    # Stems: 7x7 (ImageNet), one 3x3 (CIFAR) or three 3x3 (ResNet-D, SK nets).
    resnet_d = first[:2] == (3, 3) and second is not None and second[:2] == (3, 3)
    cifar = first[:2] == (3, 3) and not resnet_d
    width = (last_stem if resnet_d else first)[3] / 64
    layers = 0
    while dense.format(layers) in shapes:
        layers += 1
    if linear is not None:
        mode, num_layers, out_dim = "linear", 1, linear[1]
    elif layers:
        mode, num_layers, out_dim = "nonlinear", layers, shapes[dense.format(layers - 1)][1]
    else:
        mode, num_layers, out_dim = "none", 1, 128
    sk_candidates, se_candidates = [0.0], [0.0]
    convs, bns, fuse, reduce = _census(shapes, tf2)
    if convs > bns:  # SK units have one conv more than BNs (SE convs do not count: biases)
        sk_candidates = sorted({0.0625, *(mid / f for f, mid in fuse if mid > SK_MIN_DIM)})
    if reduce is not None:  # reduced = max(1, int(filters * se_ratio)), filters 64w first
        se_candidates = sorted({reduce / scaled_width(64, width), 0.25, 0.125, 0.0625})
    best, best_faults = None, None
    for depth in STAGE_SIZES:
        for sk in sk_candidates:
            for se in se_candidates:
                arch = Architecture(depth, width, cifar, sk, se, mode, num_layers, out_dim,
                                    sup[1] if sup else 0)
                faults = compare(_named(arch, tf2), shapes)
                if not faults:
                    return arch
                if best_faults is None or len(faults) < len(best_faults):
                    best, best_faults = arch, faults
    raise CheckpointMismatch(f"no official SimCLR network matches this checkpoint; the closest, "
                             f"{describe(best)}: {format_diff(best_faults)}")


def _census(shapes: dict[str, tuple], tf2: bool):
    """(ResNet convs without bias, ResNet BNs, SK (filters, mid) pairs, first SE reduction)."""
    if tf2:
        resnet = {k: s for k, s in shapes.items() if k.startswith("model/resnet_model/")}
        convs = sum(k.endswith("/kernel") and "/se_" not in k for k in resnet)
        bns = sum(k.endswith("/gamma") for k in resnet)
        fuse = [(s[2], s[3]) for k, s in resnet.items() if k.endswith("/conv2d_0/kernel")]
        reduce = [s[3] for k, s in sorted(resnet.items()) if k.endswith("/se_reduce/kernel")
                  and "block_groups/0/layers/0/" in k]
        return convs, bns, fuse, reduce[0] if reduce else None
    kernels = sorted((_conv_index(k), s) for k, s in shapes.items() if _conv_index(k) >= 0)
    biased = {i for i, _ in kernels if f"base_model/conv2d_{i}/bias" in shapes}
    convs = sum(i not in biased for i, _ in kernels)
    bns = sum(bool(re.fullmatch(r"base_model/batch_normalization(_\d+)?/gamma", k))
              for k in shapes)
    by_index = dict(kernels)
    # An SK fuse conv (1x1, f -> mid) is followed by the mixing conv (1x1, mid -> 2f).
    fuse = [(s[2], s[3]) for i, s in kernels if s[:2] == (1, 1) and i + 1 in by_index
            and by_index[i + 1][:3] == (1, 1, s[3]) and by_index[i + 1][3] == 2 * s[2]]
    reduce = min(biased) if biased else None
    return convs, bns, fuse, by_index[reduce][3] if reduce is not None else None


def compare(expected: dict[str, Variable], shapes: dict[str, tuple]) -> list[str]:
    """[] when `shapes` has exactly the expected variables; else one entry per fault."""
    faults = [f"missing {n} {v.shape}" for n, v in expected.items() if n not in shapes]
    faults += [f"unexpected {n} {shapes[n]}" for n in shapes if n not in expected]
    faults += [f"{n} has shape {shapes[n]}, expected {v.shape}" for n, v in expected.items()
               if n in shapes and tuple(shapes[n]) != v.shape]
    return faults


def format_diff(faults: list[str], limit: int = 6) -> str:
    more = f" (+{len(faults) - limit} more)" if len(faults) > limit else ""
    return "; ".join(faults[:limit]) + more


def describe(arch: Architecture | None) -> str:
    if arch is None:
        return "none"
    return (f"ResNet-{arch.depth} x{arch.width_multiplier:g}"
            f"{' CIFAR stem' if arch.cifar_stem else ''} sk_ratio={arch.sk_ratio:g} "
            f"se_ratio={arch.se_ratio:g}, head {arch.proj_head_mode}/{arch.num_proj_layers}"
            f"/{arch.proj_out_dim}, {arch.num_classes} classes")


def to_flax(arch: Architecture, values: dict[str, np.ndarray], tf2: bool = False) -> dict:
    """{'params': ..., 'batch_stats': ...} of SimCLRModel from the network's variables (as
    model_variables names them), each used exactly once."""
    expected = _named(arch, tf2)
    if faults := compare(expected, {k: tuple(np.shape(v)) for k, v in values.items()}):
        raise CheckpointMismatch(format_diff(faults))
    tree: dict = {"params": {}, "batch_stats": {}}
    for name, var in expected.items():
        node = tree[var.collection]
        for key in var.path[:-1]:
            node = node.setdefault(key, {})
        node[var.path[-1]] = np.asarray(values[name], np.float32)
    return tree
