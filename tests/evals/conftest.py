"""Fixtures of the evaluation tests: a TF1 reference SimCLR network written from the official
code (google-research/simclr resnet.py, model_util.py), saved the TF1 way.

The reference is built with raw TF ops in a tf.Graph (tf.layers needs Keras 2, gone from TF
2.21): variables are created with tf.compat.v1.get_variable in the official creation order and
named as tf.layers names them (`conv2d`, `conv2d_1`, ... and `batch_normalization`, ... under
base_model/; `nl_K/dense`, `nl_K/batch_normalization` under head_contrastive/); the test
checks that this naming reproduces the official listings exactly. Forward pass in inference
mode (BN on the moving statistics, epsilon 1e-5), as the official code computes it: fixed
padding + VALID for strided convs, 'SAME' for stride 1, projection shortcuts in the first
block of every group, the ResNet-D stem and avg-pool shortcut and selective kernels for
sk_ratio > 0, squeeze-excitation for se_ratio > 0.
"""

import contextlib
import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

STAGES = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
EPS = 1e-5


@dataclasses.dataclass
class Reference:
    """A saved reference checkpoint and what TF computed on `images`."""

    prefix: str
    images: np.ndarray  # (N, S, S, 3) float32 in [0, 1]
    h: np.ndarray
    z: np.ndarray | None
    logits: np.ndarray | None
    ema_h: np.ndarray | None
    names: dict  # every saved variable: name -> shape


class _Net:
    """Creates variables (official names, random values) and the inference graph."""

    def __init__(self, tf, rng: np.random.Generator, ops: bool, reshape: dict | None = None):
        self.tf, self.rng, self.ops, self.reshape = tf, rng, ops, reshape or {}
        self.convs = self.bns = 0
        self.trainable: list = []

    def var(self, name: str, shape: tuple, draw: Callable, trainable: bool = True):
        """A variable of `shape`; its value draw(rng, shape) is only drawn when ops=True."""
        tf = self.tf
        scope = tf.compat.v1.get_variable_scope().name
        shape = self.reshape.get(f"{scope}/{name}" if scope else name, shape)
        if self.ops:
            init = {"initializer": tf.constant(draw(self.rng, shape).astype(np.float32))}
        else:
            init = {"shape": shape, "initializer": tf.compat.v1.zeros_initializer()}
        v = tf.compat.v1.get_variable(name, trainable=trainable, **init)
        if trainable:
            self.trainable.append(v)
        return v

    @staticmethod
    def _name(base: str, i: int) -> str:
        return base if i == 0 else f"{base}_{i}"

    def conv(self, x, filters: int, kernel: int, strides: int = 1, cin: int | None = None,
             bias: bool = False):
        tf = self.tf
        cin = cin if cin is not None else int(x.shape[-1])
        std = np.sqrt(1.0 / (kernel * kernel * cin))
        with tf.compat.v1.variable_scope(self._name("conv2d", self.convs)):
            w = self.var("kernel", (kernel, kernel, cin, filters),
                         lambda r, s: r.normal(0, std, s))
            b = self.var("bias", (filters,), lambda r, s: r.normal(0, 0.1, s)) if bias else None
        self.convs += 1
        if not self.ops:
            return None
        if strides > 1:  # official fixed_padding
            total = kernel - 1
            x = tf.pad(x, [[0, 0], [total // 2, total - total // 2],
                           [total // 2, total - total // 2], [0, 0]])
        y = tf.nn.conv2d(x, w, strides, "SAME" if strides == 1 else "VALID")
        return y + b if bias else y

    def bn(self, x, channels: int, relu: bool = True, center: bool = True,
           scope: str | None = None):
        tf = self.tf
        name = scope or self._name("batch_normalization", self.bns)
        if scope is None:
            self.bns += 1
        shape = (channels,)
        with tf.compat.v1.variable_scope(name):
            gamma = self.var("gamma", shape, lambda r, s: r.uniform(0.5, 1.5, s))
            beta = (self.var("beta", shape, lambda r, s: r.normal(0, 0.1, s)) if center
                    else None)
            mean = self.var("moving_mean", shape, lambda r, s: r.normal(0, 0.1, s),
                            trainable=False)
            var = self.var("moving_variance", shape, lambda r, s: r.uniform(0.5, 1.5, s),
                           trainable=False)
        if not self.ops:
            return None
        y = tf.nn.batch_normalization(x, mean, var, beta, gamma, EPS)
        return tf.nn.relu(y) if relu else y

    def dense(self, x, cin: int, cout: int, bias: bool = False):
        tf = self.tf
        w = self.var("kernel", (cin, cout), lambda r, s: r.normal(0, 1 / np.sqrt(cin), s))
        b = self.var("bias", (cout,), lambda r, s: r.normal(0, 0.1, s)) if bias else None
        if not self.ops:
            return None
        y = tf.matmul(x, w)
        return y + b if bias else y


def _sk_conv(net: _Net, x, cin: int, filters: int, strides: int, sk_ratio: float):
    """Official sk_conv2d."""
    tf = net.tf
    y = net.bn(net.conv(x, 2 * filters, 3, strides, cin=cin), 2 * filters)
    mid = max(int(filters * sk_ratio), 32)
    if net.ops:
        y = tf.stack(tf.split(y, 2, axis=3))
        g = tf.reduce_mean(tf.reduce_sum(y, axis=0), [1, 2], keepdims=True)
    else:
        g = None
    g = net.bn(net.conv(g, mid, 1, cin=filters), mid)
    mixing = net.conv(g, 2 * filters, 1, cin=mid)
    if not net.ops:
        return None
    mixing = tf.nn.softmax(tf.stack(tf.split(mixing, 2, axis=3)), axis=0)
    return tf.reduce_sum(y * mixing, axis=0)


def _se(net: _Net, x, filters: int, channels: int, se_ratio: float):
    """Official se_layer (two biased 1x1 convs; reduce created, and called, first)."""
    tf = net.tf
    reduced = max(1, int(filters * se_ratio))
    s = tf.reduce_mean(x, [1, 2], keepdims=True) if net.ops else None
    s = net.conv(s, reduced, 1, cin=channels, bias=True)
    s = net.conv(tf.nn.relu(s) if net.ops else None, channels, 1, cin=reduced, bias=True)
    return tf.sigmoid(s) * x if net.ops else None


def _shortcut(net: _Net, x, cin: int, cout: int, strides: int, sk_ratio: float):
    tf = net.tf
    if sk_ratio > 0:  # ResNet-D: pool the shortcut only (as tf2/resnet.py)
        if net.ops:
            if strides > 1:
                x = tf.pad(x, [[0, 0], [0, 1], [0, 1], [0, 0]])
            x = tf.nn.avg_pool2d(x, 2, strides, "SAME" if strides == 1 else "VALID")
        x = net.conv(x, cout, 1, 1, cin=cin)
    else:
        x = net.conv(x, cout, 1, strides, cin=cin)
    return net.bn(x, cout, relu=False)


def _block(net: _Net, x, cin: int, filters: int, strides: int, projection: bool, bottleneck: bool,
           sk_ratio: float, se_ratio: float):
    tf = net.tf
    out = 4 * filters if bottleneck else filters
    shortcut = _shortcut(net, x, cin, out, strides, sk_ratio) if projection else x
    if bottleneck:
        y = net.bn(net.conv(x, filters, 1, cin=cin), filters)
        if sk_ratio > 0:
            y = _sk_conv(net, y, filters, filters, strides, sk_ratio)
        else:
            y = net.bn(net.conv(y, filters, 3, strides, cin=filters), filters)
        y = net.bn(net.conv(y, out, 1, cin=filters), out, relu=False)
    else:
        y = net.bn(net.conv(x, filters, 3, strides, cin=cin), filters)
        y = net.bn(net.conv(y, filters, 3, cin=filters), filters, relu=False)
    if se_ratio > 0:
        y = _se(net, y, filters, out, se_ratio)
    return (tf.nn.relu(y + shortcut) if net.ops else None), out


def _resnet(net: _Net, x, depth: int, width: float, cifar_stem: bool, sk_ratio: float,
            se_ratio: float):
    """Official resnet_v1 (channels_last); width may be fractional here (64 * width integer)."""
    tf = net.tf
    w64 = int(64 * width)
    if cifar_stem:
        x = net.bn(net.conv(x, w64, 3, 1, cin=3), w64)
    else:
        if sk_ratio > 0:
            x = net.bn(net.conv(x, w64 // 2, 3, 2, cin=3), w64 // 2)
            x = net.bn(net.conv(x, w64 // 2, 3, 1, cin=w64 // 2), w64 // 2)
            x = net.bn(net.conv(x, w64, 3, 1, cin=w64 // 2), w64)
        else:
            x = net.bn(net.conv(x, w64, 7, 2, cin=3), w64)
        x = tf.nn.max_pool2d(x, 3, 2, "SAME") if net.ops else None
    channels = w64
    for stage, blocks in enumerate(STAGES[depth]):
        for b in range(blocks):
            x, channels = _block(net, x, channels, int(64 * 2**stage * width),
                                 2 if stage > 0 and b == 0 else 1, b == 0, depth >= 50,
                                 sk_ratio, se_ratio)
    return (tf.reduce_mean(x, [1, 2]) if net.ops else None), channels


def _projection_head(net: _Net, h, width: int, layers: int, out_dim: int):
    """Official projection_head, proj_head_mode='nonlinear'."""
    tf = net.tf
    x = h
    for j in range(layers):
        last = j == layers - 1
        with tf.compat.v1.variable_scope(f"nl_{j}"):
            with tf.compat.v1.variable_scope("dense"):
                x = net.dense(x, width, out_dim if last else width)
            x = net.bn(x, out_dim if last else width, relu=not last, center=not last,
                       scope="batch_normalization")
    return x


def build_reference(path: Path | None, *, depth: int, width: float, cifar_stem: bool,
                    image_size: int, sk_ratio: float = 0.0, se_ratio: float = 0.0,
                    num_proj_layers: int = 3, proj_out_dim: int = 128, num_classes: int = 0,
                    ema: bool = False, global_step: int = 1234, seed: int = 0,
                    ops: bool = True, images: np.ndarray | None = None,
                    exclude: tuple[str, ...] = (), reshape: dict | None = None) -> Reference:
    """Builds, runs (inference, on `images` or two random ones) and saves (at path, unless
    None) the reference network. `ops=False` only creates the variables (and their Momentum
    slots, zeros); `exclude` leaves variables out of the saved checkpoint and `reshape` gives
    some another shape (with ops=False), for the bad-checkpoint tests."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    if images is None:
        images = rng.uniform(0, 1, (2, image_size, image_size, 3)).astype(np.float32)
    graph = tf.Graph()
    with graph.as_default():
        x = tf.constant(images) if ops else None
        outs = {}
        copies = [""] + (["ema_model"] if ema else [])
        for copy in copies:
            net = _Net(tf, rng, ops, reshape)
            with (tf.compat.v1.variable_scope(copy) if copy else contextlib.nullcontext()):
                with tf.compat.v1.variable_scope("base_model"):
                    h, channels = _resnet(net, x, depth, width, cifar_stem, sk_ratio, se_ratio)
                z = None
                if num_proj_layers:
                    with tf.compat.v1.variable_scope("head_contrastive"):
                        z = _projection_head(net, h, channels, num_proj_layers, proj_out_dim)
            logits = None
            if num_classes and not copy:  # the released checkpoints: one, without a prefix
                with tf.compat.v1.variable_scope("head_supervised"):
                    with tf.compat.v1.variable_scope("linear_layer"):
                        with tf.compat.v1.variable_scope("dense"):
                            logits = net.dense(h, channels, num_classes, bias=True)
            outs[copy] = (h, z, logits, list(net.trainable))
        # Momentum slots for every trainable variable, and the step counter, as the official
        # LARS / Momentum optimizers and the Estimator leave them.
        for v in outs[""][3]:  # the EMA copy is not trained: no slots
            tf.compat.v1.get_variable(f"{v.op.name}/Momentum", shape=v.shape,
                                      initializer=tf.compat.v1.zeros_initializer(),
                                      trainable=False)
        tf.compat.v1.get_variable("global_step", initializer=tf.constant(global_step, tf.int64),
                                  trainable=False)
        saved = [v for v in tf.compat.v1.global_variables() if v.op.name not in exclude]
        names = {v.op.name: tuple(v.shape.as_list()) for v in saved}
        if not ops and path is None:
            return Reference("", images, None, None, None, None, names)
        fetched, ema_h, prefix = {}, None, ""
        with tf.compat.v1.Session(graph=graph) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            if ops:
                h, z, logits, _ = outs[""]
                fetched = sess.run({"h": h, "z": z if z is not None else tf.constant(0.0),
                                    "logits": logits if logits is not None else tf.constant(0.0)})
                ema_h = sess.run(outs["ema_model"][0]) if ema else None
            if path is not None:
                prefix = str(path / f"model.ckpt-{global_step}")
                tf.compat.v1.train.Saver(saved).save(sess, prefix, write_meta_graph=False,
                                                     write_state=True)
    return Reference(prefix, images, fetched.get("h"),
                     fetched.get("z") if num_proj_layers else None,
                     fetched.get("logits") if num_classes else None, ema_h, names)


@pytest.fixture(scope="session")
def tf1_reference() -> Callable[..., Reference]:
    """tf1_reference(path, depth=, width=, cifar_stem=, image_size=, sk_ratio=0, se_ratio=0,
    num_proj_layers=3, proj_out_dim=128, num_classes=0, ema=False, global_step=1234, seed=0,
    ops=True, images=None, exclude=(), reshape=None): the official network in TF1, random
    weights, saved at path/model.ckpt-STEP (see build_reference)."""
    return build_reference
