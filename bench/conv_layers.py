"""Benchmark: one stride-1 3x3 convolution layer of the ResNet-18 CIFAR network, per
implementation, forward and backward apart (ms, best of --repeats).

    python bench/conv_layers.py --width=0.25 --batch=512     # the CPU debugging size
    python bench/conv_layers.py --width=1 --batch=256        # the full-width step's layers

For each stage's shape (32x32x64w, 16x16x128w, 8x8x256w, 4x4x512w at width w): XLA's forward,
its input gradient and its kernel gradient alone, oneDNN's forward alone (cpu/onednn.py, the
CPU default), then forward + backward of XLA, oneDNN, Winograd F(4x4, 3x3) in batch chunks
(cpu/winograd.py, cpu/chunks.py), the hybrid used at <= 16 channels (XLA's forward and
input gradient, Winograd's kernel gradient) and im2col (cpu/conv.py), as `jax.grad` of a sum
of squares.
"""

import os
import sys
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

flags.DEFINE_float("width", 0.25, "ResNet-18 width multiplier.")
flags.DEFINE_integer("batch", 512, "Views per step (2 per image).")
flags.DEFINE_integer("repeats", 3, "Timed calls per figure (after one warm-up).")
FLAGS = flags.FLAGS


def best_ms(fn, *args) -> float:
    import jax

    fn = jax.jit(fn)
    jax.block_until_ready(fn(*args))
    best = float("inf")
    for _ in range(FLAGS.repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - t)
    return best * 1e3


def main(argv) -> None:
    del argv
    import jax
    import jax.numpy as jnp

    from simclr_jax.cpu import onednn
    from simclr_jax.cpu.conv import im2col_conv
    from simclr_jax.cpu.winograd import winograd_conv3x3, xla_winograd_conv3x3

    def xla(x, k):
        return jax.lax.conv_general_dilated(x, k, (1, 1), ((1, 1), (1, 1)),
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))

    def one_dnn(x, k):
        return onednn.conv(x, k, onednn.geometry_of(x.shape, k.shape, (1, 1), ((1, 1), (1, 1))))

    impls = {"xla": xla, "onednn": one_dnn, "winograd": lambda x, k: winograd_conv3x3(x, k, 4),
             "xla+winograd kernel grad": xla_winograd_conv3x3,
             "im2col": lambda x, k: im2col_conv(x, k, (1, 1), ((1, 1), (1, 1)))}
    print(f"3x3 conv layers, R18 width {FLAGS.width:g}, {FLAGS.batch} views, f32, "
          f"{jax.devices()[0].platform}; load average {os.getloadavg()[0]:.1f}")
    for h, c in ((32, 64), (16, 128), (8, 256), (4, 512)):
        c = max(1, int(c * FLAGS.width))
        x = jax.random.normal(jax.random.PRNGKey(0), (FLAGS.batch, h, h, c))
        k = 0.1 * jax.random.normal(jax.random.PRNGKey(1), (3, 3, c, c))
        dy = jax.random.normal(jax.random.PRNGKey(2), (FLAGS.batch, h, h, c))
        parts = {"xla forward": best_ms(xla, x, k),
                 "xla input grad": best_ms(lambda x, k, dy: jax.vjp(lambda x: xla(x, k), x)[1](dy),
                                           x, k, dy),
                 "xla kernel grad": best_ms(
                     lambda x, k, dy: jax.vjp(lambda k: xla(x, k), k)[1](dy), x, k, dy),
                 "onednn forward": best_ms(one_dnn, x, k)}
        for name, f in impls.items():
            parts[f"{name} fwd+bwd"] = best_ms(
                jax.grad(lambda x, k, f=f: jnp.sum(f(x, k) ** 2), argnums=(0, 1)), x, k)
        print(f"H={h:2d} C={c:3d}: " + " | ".join(f"{n} {v:.1f}" for n, v in parts.items()),
              flush=True)


if __name__ == "__main__":
    app.run(main)
