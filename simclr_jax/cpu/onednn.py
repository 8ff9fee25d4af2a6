"""conv_impl='onednn': the CPU convolutions through oneDNN, forward and both gradients.

XLA:CPU lowers convolutions to YNNPACK, whose kernel gradient runs 3-6x below its forward
pass; our Winograd and im2col rewrites (cpu/winograd.py, cpu/conv.py) close part of that
gap. oneDNN, the library under PyTorch's and TensorFlow's CPU convolutions, has JIT-compiled
kernels for all three on NHWC activations: measured on the 2-core dev machine (B=512 views,
R18 at width 1/4, fwd+bwd of one 3x3 layer, bench/conv_layers.py), 2-4x faster than our
fastest rewrite at every stage. The handlers (onednn_conv.cc, built by onednn_build.py) are
XLA FFI custom calls. XLA cannot split a custom call over devices by itself, so each is wrapped
in `custom_partitioning`: a batch-sharded step keeps its activations sharded, and each device
computes the kernel gradient of its own images, which XLA then sums like any other gradient.
(JAX keys a custom-partitioned program by a Python object's id, so multi-device programs with
these convolutions miss its persistent compilation cache; single-device ones are not
partitioned.)
f32 only (the CPU jobs' dtype); TPU/GPU never come here (core/backend.py picks XLA's convs there).
"""

import functools
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental.custom_partitioning import custom_partitioning
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from simclr_jax.cpu import onednn_build

# (stride_h, stride_w, top, bottom, left, right): a convolution's geometry besides its shapes.
Geometry = tuple[int, int, int, int, int, int]


@functools.cache
def unavailable_reason() -> str | None:
    """None where the oneDNN convolutions are built and registered (once per process), else
    why not (no library, no compiler, not x86-64 Linux: the message names the fix)."""
    try:
        onednn_build.load()
    except onednn_build.OneDnnUnavailable as e:
        return str(e)
    except Exception as e:  # noqa: BLE001 - whatever stops the build, auto must fall back
        return f"building or loading the handlers failed: {type(e).__name__}: {e}"
    return None


def threads_per_device() -> int:
    """The OpenMP threads of each convolution: this process's cores ($OMP_NUM_THREADS where
    set) shared by its devices, whose computations run concurrently. Measured on the 2-core
    machine: the tests' tiny step on 8 simulated devices took 0.13 s with a 2-thread team per
    convolution (16 threads spinning on 2 cores), 0.035 s with 1 thread each."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        cores = int(os.environ.get("OMP_NUM_THREADS", "").split(",")[0])
    except ValueError:
        pass
    return max(1, (cores or 1) // jax.local_device_count())


def _attrs(geometry: Geometry) -> dict[str, np.int64]:
    names = ("stride_h", "stride_w", "top", "bottom", "left", "right")
    attrs = {n: np.int64(v) for n, v in zip(names, geometry, strict=True)}
    return attrs | {"threads": np.int64(threads_per_device())}


def _call(target: str, shape: tuple[int, ...], a, b, geometry: Geometry):
    return jax.ffi.ffi_call(target, jax.ShapeDtypeStruct(shape, jnp.float32),
                            vmap_method="sequential")(a, b, **_attrs(geometry))


def _leading_axis_shardings(mesh, arg_shapes, result_shape, batched_args: tuple[bool, ...]):
    """(mesh, result sharding, operand shardings): every batched operand and the result split
    over the devices that split operand 0's leading axis, everything else whole on each
    device. Operand 0 sharded some other way is made whole first: correct, if slower."""
    sharding = arg_shapes[0].sharding
    lead = None
    if isinstance(sharding, NamedSharding):
        mesh, lead = sharding.mesh, (sharding.spec[0] if len(sharding.spec) else None)

    def split(ndim: int) -> NamedSharding:
        return NamedSharding(mesh, P(lead, *([None] * (ndim - 1))))

    args = tuple(split(len(s.shape)) if batched else NamedSharding(mesh, P())
                 for s, batched in zip(arg_shapes, batched_args, strict=True))
    return mesh, split(len(result_shape.shape)), args


def _partitioned(target: str, rule: str, batched_args: tuple[bool, ...]):
    """`target` as a custom_partitioning op f(a, b, out_shape, geometry) whose leading axis
    (the batch, or the groups of BackwardWeights) is split over devices as operand 0's is."""

    def fn(a, b, shape, geometry):
        return _call(target, shape, a, b, geometry)

    op = custom_partitioning(fn, static_argnums=(2, 3))

    def partition(shape, geometry, mesh, arg_shapes, result_shape):
        mesh, out, args = _leading_axis_shardings(mesh, arg_shapes, result_shape, batched_args)
        local = out.shard_shape(result_shape.shape)
        return mesh, lambda a, b: _call(target, local, a, b, geometry), out, args

    def infer(shape, geometry, mesh, arg_shapes, result_shape):
        return _leading_axis_shardings(mesh, arg_shapes, result_shape, batched_args)[1]

    # Shardy wants them in the order they first appear in the rule.
    factors = dict.fromkeys(rule.replace(",", " ").replace("->", " ").split())
    op.def_partition(partition=partition, infer_sharding_from_operands=infer, sharding_rule=rule,
                     need_replication_factors=tuple(f for f in factors if f != "g"))
    return op


# Factor g is the leading axis that devices split; every other one stays whole on a device.
_forward = _partitioned("simclr_onednn_conv_forward", "g h w c, i j c o -> g p q o",
                        (True, False))
_backward_data = _partitioned("simclr_onednn_conv_backward_data",
                              "g p q o, i j c o -> g h w c", (True, False))
_backward_weights = _partitioned("simclr_onednn_conv_backward_weights",
                                 "g n h w c, g n p q o -> g i j c o", (True, True))


def _groups(batch: int) -> int:
    """How many groups the batch's kernel gradient is computed in: one per device where the
    batch splits evenly over devices (a batch-sharded step's per-device slices), else 1."""
    devices = jax.device_count()
    return devices if batch % devices == 0 else 1


def output_shape(x_shape, kernel_shape, geometry: Geometry) -> tuple[int, int, int, int]:
    sh, sw, top, bottom, left, right = geometry
    kh, kw, _, cout = kernel_shape
    return (x_shape[0], (x_shape[1] + top + bottom - kh) // sh + 1,
            (x_shape[2] + left + right - kw) // sw + 1, cout)


def _require_handlers() -> None:
    """Builds and registers the handlers before a program uses them (at trace time)."""
    if (reason := unavailable_reason()) is not None:
        raise onednn_build.OneDnnUnavailable(reason)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv(x: jnp.ndarray, kernel: jnp.ndarray, geometry: Geometry) -> jnp.ndarray:
    """y = the cross-correlation of x (N, H, W, Cin) with kernel (kh, kw, Cin, Cout), f32, with
    `geometry`'s strides and zero padding, as lax.conv_general_dilated computes it. Raises
    OneDnnUnavailable (with the reason) where the handlers cannot be built."""
    _require_handlers()
    return _forward(x, kernel, output_shape(x.shape, kernel.shape, geometry), geometry)


def _conv_fwd(x, kernel, geometry):
    _require_handlers()
    return conv(x, kernel, geometry), (x, kernel)


def _conv_bwd(geometry, residuals, dy):
    x, kernel = residuals
    dx = _backward_data(dy, kernel, x.shape, geometry)
    g = _groups(x.shape[0])
    grouped = [a.reshape(g, a.shape[0] // g, *a.shape[1:]) for a in (x, dy)]
    dk = _backward_weights(*grouped, (g, *kernel.shape), geometry)
    return dx, jnp.sum(dk, axis=0) if g > 1 else dk[0]


conv.defvjp(_conv_fwd, _conv_bwd)


def geometry_of(x_shape, kernel_shape, strides, pads) -> Geometry:
    """The Geometry of a convolution with `strides` and explicit `pads` ((top, bottom),
    (left, right)); checks the output is not empty."""
    (top, bottom), (left, right) = pads
    geometry = (int(strides[0]), int(strides[1]), int(top), int(bottom), int(left), int(right))
    if math.prod(output_shape(x_shape, kernel_shape, geometry)[1:3]) <= 0:
        raise ValueError(f"convolution of {x_shape} with {kernel_shape} has no output")
    return geometry
