"""conv_impl='onednn' equals XLA's convolution: outputs, input and kernel gradients, alone, in a
ResNet, sharded over the 8 simulated devices; and its build, cache and unavailability paths.

Tolerance: oneDNN sums the same products as XLA in another order (blocked over channels, split
over threads), so they differ by float32 rounding of the sums: 1e-5 of the largest entry, far
below what a wrong padding, stride, layout or missing kernel-gradient term changes (O(1)).
"""

import functools
import logging
from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from simclr_jax.core import parallel
from simclr_jax.cpu import conv as conv_module
from simclr_jax.cpu import onednn, onednn_build
from simclr_jax.cpu.conv import OneDnnConv, WinogradConv, conv_class
from simclr_jax.errors import UserError
from simclr_jax.models import ResNet

pytestmark = pytest.mark.skipif(
    onednn.unavailable_reason() is not None,
    reason=f"oneDNN convolutions unavailable: {onednn.unavailable_reason()}")


def _xla_conv(x, kernel, strides, pads):
    return jax.lax.conv_general_dilated(x, kernel, strides, pads,
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                        precision=jax.lax.Precision.HIGHEST)


def _ours(x, kernel, strides, pads):
    return onednn.conv(x, kernel, onednn.geometry_of(x.shape, kernel.shape, strides, pads))


def _close(a, b):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5 * float(jnp.abs(b).max()))


# (H, W, cin, cout, kernel, strides, pads): the ResNets' convolutions and their edge cases.
GEOMETRIES = {
    "3x3 stride 1, H != W": (8, 9, 5, 6, 3, (1, 1), ((1, 1), (1, 1))),
    "3x3 stride 2, fixed padding": (9, 8, 4, 7, 3, (2, 2), ((1, 1), (1, 1))),
    "3x3 stride 2, SAME (pad after)": (8, 8, 4, 5, 3, (2, 2), ((0, 1), (0, 1))),
    "1x1 stride 2 shortcut": (8, 6, 6, 3, 1, (2, 2), ((0, 0), (0, 0))),
    "7x7 stride 2 stem": (15, 14, 3, 8, 7, (2, 2), ((3, 3), (2, 3))),
    "asymmetric strides": (10, 9, 2, 4, 3, (1, 2), ((1, 1), (0, 1))),
}


def _operands(h, w, cin, cout, k, strides, pads, batch=2, seed=0):
    kx, kk, kd = jax.random.split(jax.random.PRNGKey(seed), 3)
    x = jax.random.normal(kx, (batch, h, w, cin))
    kernel = jax.random.normal(kk, (k, k, cin, cout))
    dy = jax.random.normal(kd, jax.eval_shape(partial(_xla_conv, strides=strides, pads=pads),
                                              x, kernel).shape)
    return x, kernel, dy


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_value_and_grads_equal_xla_conv(geometry):
    h, w, cin, cout, k, strides, pads = GEOMETRIES[geometry]
    x, kernel, dy = _operands(h, w, cin, cout, k, strides, pads)
    out, vjp = jax.vjp(jax.jit(partial(_ours, strides=strides, pads=pads)), x, kernel)
    ref, vjp_ref = jax.vjp(partial(_xla_conv, strides=strides, pads=pads), x, kernel)
    assert out.shape == ref.shape
    _close(out, ref)
    for ours, theirs in zip(vjp(dy), vjp_ref(dy), strict=True):
        _close(ours, theirs)


def test_batch_sharded_over_devices_stays_sharded_and_equals_xla():
    """On the 8 simulated devices: each device convolves its own 2 images (no all-gather of
    activations), each device's kernel gradient is summed across devices, and the values equal
    XLA's on the whole batch."""
    h, w, cin, cout, k, strides, pads = GEOMETRIES["3x3 stride 2, fixed padding"]
    x, kernel, dy = _operands(h, w, cin, cout, k, strides, pads, batch=16, seed=1)
    mesh = parallel.make_mesh()
    assert mesh.devices.size == 8

    def grads(conv, x, kernel, dy):
        out, vjp = jax.vjp(partial(conv, strides=strides, pads=pads), x, kernel)
        return (out, *vjp(dy))

    xs, dys = (jax.device_put(a, parallel.batch_sharded(mesh)) for a in (x, dy))
    ks = jax.device_put(kernel, parallel.replicated(mesh))
    sharded = jax.jit(partial(grads, _ours))
    hlo = sharded.lower(xs, ks, dys).compile().as_text()
    assert "all-gather" not in hlo
    calls = [line for line in hlo.splitlines() if 'custom_call_target="simclr_onednn' in line]
    assert len(calls) == 3 and all("f32[2," in c or "f32[1,2," in c for c in calls), calls
    ours = sharded(xs, ks, dys)
    assert ours[0].sharding.spec[0] == parallel.DATA_AXIS
    for a, b in zip(ours, grads(_xla_conv, x, kernel, dy), strict=True):
        _close(a, b)


def test_resnet_one_vs_eight_devices_and_xla():
    """A ResNet-18 (1/8 width, CIFAR stem) in training mode, batch-sharded BN included: loss,
    gradients and BN statistics of conv_impl='onednn' on 1 device and on 8 equal XLA's."""
    x = jax.random.normal(jax.random.PRNGKey(2), (16, 16, 16, 3))
    models = {impl: ResNet(depth=18, width_multiplier=0.125, cifar_stem=True, conv=conv_class(impl))
              for impl in ("xla", "onednn")}
    v = models["xla"].init(jax.random.PRNGKey(0), x[:2], train=False)

    def loss(model, params, x):
        h, updates = model.apply({"params": params, "batch_stats": v["batch_stats"]}, x,
                                 train=True, mutable=["batch_stats"])
        return jnp.sum(jnp.sin(h)), updates["batch_stats"]

    def run(impl, devices):
        mesh = parallel.make_mesh(jax.devices()[:devices])
        params = jax.device_put(v["params"], parallel.replicated(mesh))
        xs = jax.device_put(x, parallel.batch_sharded(mesh))
        step = jax.jit(jax.value_and_grad(partial(loss, models[impl]), has_aux=True))
        return jax.device_get(step(params, xs))

    ref = run("xla", 1)
    for devices in (1, 8):
        ours = run("onednn", devices)
        for a, b in zip(jax.tree_util.tree_leaves(ours), jax.tree_util.tree_leaves(ref),
                        strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * float(np.abs(b).max()))


def test_module_same_params_as_nn_conv_and_bf16_takes_winograd():
    x = jax.random.normal(jax.random.PRNGKey(3), (2, 8, 8, 4))
    for k, s, features in [(3, 1, 6), (3, 2, 6), (1, 2, 5)]:
        ref = nn.Conv(features, (k, k), (s, s), padding="SAME", use_bias=False)
        params = ref.init(jax.random.PRNGKey(0), x)
        ours = OneDnnConv(features, (k, k), (s, s))
        assert jax.tree_util.tree_structure(ours.init(jax.random.PRNGKey(0), x)) == \
            jax.tree_util.tree_structure(params)
        _close(ours.apply(params, x), ref.apply(params, x))
    # bf16 is not sent to the f32 handlers: no oneDNN custom call in the program.
    bf16 = OneDnnConv(6, (3, 3), dtype=jnp.bfloat16)
    params = bf16.init(jax.random.PRNGKey(0), x)
    assert "simclr_onednn" not in jax.jit(bf16.apply).lower(params, x).as_text()
    assert conv_class("onednn") is OneDnnConv and conv_class("auto") is OneDnnConv


def test_unavailable_onednn_is_one_clear_error_and_auto_falls_back(monkeypatch):
    monkeypatch.setattr(onednn, "unavailable_reason", lambda: "no oneDNN 3 under /nowhere")
    x, kernel = jnp.zeros((1, 4, 4, 2)), jnp.zeros((3, 3, 2, 2))
    with pytest.raises(onednn_build.OneDnnUnavailable, match="/nowhere"):  # not XLA's NOT_FOUND
        _ours(x, kernel, (1, 1), ((1, 1), (1, 1)))
    with pytest.raises(UserError, match=r"config\.conv_impl: 'onednn' is unavailable here: "
                                        r"no oneDNN 3 under /nowhere"):
        conv_class("onednn")
    assert conv_class("auto") is WinogradConv


def test_build_is_cached_per_source_and_reports_what_is_missing(monkeypatch, tmp_path):
    monkeypatch.setenv("SIMCLR_JAX_CACHE", str(tmp_path))
    built = onednn_build.build()
    assert built.parent == tmp_path and built.is_file()
    assert [p.name for p in tmp_path.iterdir()] == [built.name]  # no temporary left behind

    def no_compiler(*args):
        raise AssertionError("rebuilt although cached")

    monkeypatch.setattr(onednn_build, "_compile", no_compiler)
    assert onednn_build.build() == built
    monkeypatch.setattr(onednn_build, "_HEADER", onednn_build._HEADER.with_name("missing.hpp"))
    with pytest.raises(onednn_build.OneDnnUnavailable,
                       match="pip install onednn-cpu-gomp==2023.2.0.*conv_impl=winograd"):
        onednn_build.build()


def test_a_missing_source_is_a_reason_not_a_traceback(monkeypatch, tmp_path):
    # What an install without the package data met: FileNotFoundError from deep in the build.
    monkeypatch.setenv("SIMCLR_JAX_CACHE", str(tmp_path))
    monkeypatch.setattr(onednn_build, "SOURCE", tmp_path / "onednn_conv.cc")
    with pytest.raises(onednn_build.OneDnnUnavailable,
                       match=r"onednn_conv\.cc is not installed.*pip install \."):
        onednn_build.build()


def test_auto_falls_back_on_any_build_or_load_failure_and_logs_it_once(monkeypatch, caplog):
    def broken_load():
        raise OSError("libdnnl.so.3: cannot open shared object file")

    monkeypatch.setattr(onednn_build, "load", broken_load)
    monkeypatch.setattr(conv_module, "_log_fallback",
                        functools.cache(conv_module._log_fallback.__wrapped__))
    onednn.unavailable_reason.cache_clear()
    try:
        with caplog.at_level(logging.WARNING):
            assert conv_class("auto") is WinogradConv and conv_class("auto") is WinogradConv
        with pytest.raises(UserError, match=r"'onednn' is unavailable here: .*OSError: "
                                            r"libdnnl\.so\.3: cannot open"):
            conv_class("onednn")
    finally:
        onednn.unavailable_reason.cache_clear()  # the real handlers again for later tests
    fallbacks = [r.getMessage() for r in caplog.records if "conv_impl=auto" in r.getMessage()]
    assert len(fallbacks) == 1 and "libdnnl.so.3: cannot open" in fallbacks[0], fallbacks
