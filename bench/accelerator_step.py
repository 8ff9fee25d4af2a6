"""The train step on this host's accelerators: images/s per chip, MFU, the device augmentation's
share, and 1 device vs all local devices. Part of bench/accelerator_check.sh.

    python bench/accelerator_step.py                         # R50, 224 px, bf16, 64 per device
    python bench/accelerator_step.py --peak_tflops=989       # give the chip's peak yourself
    python bench/accelerator_step.py --depth=18 --width=0.125 --image_size=32 \
        --per_device_batch=4 --dtype=float32 --steps=2        # tiny (what --smoke runs)

MFU = the compiled step's FLOPs per device (XLA's cost_analysis, all of it: augmentation,
forward, backward, loss, optimiser) / measured seconds per step / the chip's peak for --dtype.
The peak comes from --peak_tflops, else from bench/peaks.py by jax's exact device_kind, else
from a matmul of that dtype measured in this run; the line "peak per device" says which.
Steps are dispatched back to back (as the training loop does) and timed to the last one's
completion.
"""

import os
import sys
import time

from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import peaks  # noqa: E402 (bench/peaks.py, next to this script)

flags.DEFINE_integer("depth", 50, "ResNet depth.")
flags.DEFINE_float("width", 1.0, "Width multiplier.")
flags.DEFINE_integer("image_size", 224, "View size.")
flags.DEFINE_integer("per_device_batch", 64, "Images per device (2 views each).")
flags.DEFINE_string("dtype", "bfloat16", "Compute dtype.")
flags.DEFINE_integer("steps", 10, "Timed steps (after 2 warm-up steps).")
flags.DEFINE_float("peak_tflops", 0.0, "The chip's dense peak in TFLOP/s for --dtype "
                   "(0 = look it up by device kind; on CPU: measure a matmul).")
flags.DEFINE_string("conv_impl", "auto", "config.conv_impl (auto: XLA's on TPU/GPU).")
flags.DEFINE_bool("scaling", True, "Also run the step on 1 device and compare.")
FLAGS = flags.FLAGS


def chip_peak(device, dtype: str) -> tuple[float, str]:
    """(FLOP/s, where the figure came from) of one device for `dtype`."""
    if FLAGS.peak_tflops:
        return FLAGS.peak_tflops * 1e12, "--peak_tflops"
    kind = device.device_kind
    tflops = peaks.table_peak(kind, device.platform, dtype)
    if tflops is not None:
        return tflops * 1e12, f"table: {kind!r} ({dtype}, bench/peaks.py)"
    return matmul_peak(dtype), (f"measured {dtype} matmul (2048^2): {kind!r} is not in "
                                f"bench/peaks.py (give --peak_tflops)")


def matmul_peak(dtype: str, n: int = 2048, reps: int = 10) -> float:
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.PRNGKey(0), (n, n)).astype(getattr(jnp, dtype))
    f = jax.jit(lambda a: a @ a)
    f(a).block_until_ready()
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        f(a).block_until_ready()
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def measure(devices) -> dict:
    """Seconds per step, FLOPs per device and the augmentation's seconds on `devices`."""
    import jax
    import numpy as np

    from simclr_jax.augment import views
    from simclr_jax.augment.recipes import Augmentation
    from simclr_jax.config import base_config
    from simclr_jax.core import backend, optim, parallel, train
    from simclr_jax.models import build_model

    mesh = parallel.make_mesh(devices)
    c = base_config()  # the ImageNet recipe: colour s=1, blur p=0.5 on the device
    c.update(dict(resnet_depth=FLAGS.depth, width_multiplier=FLAGS.width,
                  image_size=FLAGS.image_size, batch_size=FLAGS.per_device_batch * len(devices),
                  dtype=FLAGS.dtype, conv_impl=FLAGS.conv_impl))
    model = build_model(c, num_classes=1000, conv=backend.conv_module(c.conv_impl))
    schedule = optim.learning_rate_schedule(c, 100, 10_000)
    tx = optim.build_optimizer(c, schedule)
    state = train.init_state_on_mesh(model, tx, c, mesh)
    step = train.make_train_step(model, tx, schedule, c, mesh)
    rng = np.random.default_rng(0)
    b, s = c.batch_size, c.image_size
    batch = parallel.global_batch(mesh, {
        "view1": rng.integers(0, 256, (b, s, s, 3), dtype=np.uint8),
        "view2": rng.integers(0, 256, (b, s, s, 3), dtype=np.uint8),
        "label": rng.integers(0, 1000, (b,), dtype=np.int32)})
    t = time.perf_counter()
    compiled = step.lower(state, batch).compile()
    compile_s = time.perf_counter() - t
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    for _ in range(2):  # the compiled executable: calling `step` would compile it again
        state, m = compiled(state, batch)
    jax.block_until_ready(m)
    t = time.perf_counter()
    for _ in range(FLAGS.steps):
        state, m = compiled(state, batch)
    jax.block_until_ready((state, m))
    step_s = (time.perf_counter() - t) / FLAGS.steps

    aug = jax.jit(lambda st, bt: views.augment_views(Augmentation.from_config(c), st, bt))
    jax.block_until_ready(aug(state.step, batch))
    t = time.perf_counter()
    for _ in range(FLAGS.steps):
        out = aug(state.step, batch)
    jax.block_until_ready(out)
    aug_s = (time.perf_counter() - t) / FLAGS.steps
    return {"devices": len(devices), "batch": b, "step_s": step_s, "aug_s": aug_s,
            "flops_per_device": float(cost["flops"]), "compile_s": compile_s}


def main(argv) -> None:
    del argv
    import jax

    devices = jax.local_devices()
    d0 = devices[0]
    print(f"backend {jax.default_backend()}, {len(devices)} local devices ({d0.device_kind}); "
          f"R{FLAGS.depth} x{FLAGS.width:g} {FLAGS.image_size} px {FLAGS.dtype}, "
          f"{FLAGS.per_device_batch} images per device", flush=True)
    peak, source = chip_peak(d0, FLAGS.dtype)
    print(f"peak per device: {peak / 1e12:.2f} TFLOP/s ({source})", flush=True)
    counts = [len(devices)] + ([1] if FLAGS.scaling and len(devices) > 1 else [])
    results = {}
    for k in counts:
        r = results[k] = measure(devices[:k])
        per_chip = r["batch"] / r["step_s"] / k
        mfu = r["flops_per_device"] / r["step_s"] / peak
        print(f"step on {k} device(s), global batch {r['batch']}: {r['step_s'] * 1e3:.1f} ms, "
              f"{r['batch'] / r['step_s']:.1f} images/s = {per_chip:.1f} images/s per chip; "
              f"{r['flops_per_device'] / r['batch'] * k / 1e9:.1f} GFLOP per image; MFU "
              f"{mfu:.1%}; device augmentation {r['aug_s'] * 1e3:.1f} ms = "
              f"{r['aug_s'] / r['step_s']:.1%} of the step (compiled in {r['compile_s']:.0f} s)",
              flush=True)
    if len(results) == 2:
        n = len(devices)
        rate = {k: results[k]["batch"] / results[k]["step_s"] for k in results}
        print(f"scaling 1 -> {n} devices: {rate[n] / rate[1]:.2f}x images/s "
              f"(efficiency {rate[n] / rate[1] / n:.0%} of linear)", flush=True)
    anchor = 5.9e3 / 32  # official: R50 100 epochs at B=4096 in ~6 h on 32 TPU v3 cores
    print(f"anchor: the official TF code's ~5.9k images/s on 32 TPU v3 cores = {anchor:.0f} "
          f"images/s per core", flush=True)


if __name__ == "__main__":
    app.run(main)
