"""Benchmark: each residual block of ResNet-18 alone, ours against the PyTorch peer's, so the
blocks where the step loses are visible (ms, best over interleaved rounds).

    python bench/blocks.py --width=0.25 --batch=512 --peer_python=/work/peer-venv/bin/python
    python bench/blocks.py --width=1 --batch=256 --conv_impl=xla          # ours only

The 8 blocks of the CIFAR-stem network at 32 px (stages at 32x32x64w, 16x16x128w, 8x8x256w,
4x4x512w for width w): each stage's first block with its projection shortcut (stride 2 from stage
2 on), then the stride-1 block with the identity shortcut; conv-BN-ReLU-conv-BN, add, ReLU, BN in
training mode. Each named `<stage>_<block> <input H>x<input channels>[/stride]`, forward alone
and forward + backward (`jax.grad` of a sum of squares w.r.t. the
parameters and the input). Ours: models/resnet.py's BasicBlock with `--conv_impl`'s
convolutions (auto = the CPU default); the peer: bench/peer_torch.py's block (`--mode=blocks`),
channels-last. Rounds alternate ours and the peer's, so other load on the machine falls on both.
"""

import json
import os
import subprocess
import sys
import time

from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

flags.DEFINE_float("width", 0.25, "ResNet-18 width multiplier.")
flags.DEFINE_integer("batch", 512, "Views per call (2 per image).")
flags.DEFINE_string("conv_impl", "auto", "config.conv_impl of ours.")
flags.DEFINE_integer("calls", 4, "Timed calls per figure and round (after one warm-up).")
flags.DEFINE_integer("repeats", 2, "Interleaved rounds.")
flags.DEFINE_string("peer_python", os.environ.get("SIMCLR_PEER_PYTHON", ""),
                    "Interpreter with torch + lightly ('' = ours only).")
FLAGS = flags.FLAGS


def blocks(width: float) -> list[tuple[str, int, int, int, int]]:
    """(name, input H, input channels, channels, stride) of the 8 blocks of ResNet-18 at 32 px
    (the CIFAR stem keeps 32x32 in stage 1); each stage's first block has the projection."""
    out, cin = [], max(1, int(round(64 * width)))
    for stage in range(4):
        c, h = max(1, int(round(64 * 2**stage * width))), 32 // 2**max(0, stage - 1)
        stride = 2 if stage else 1
        out.append((f"{stage + 1}_0 {h}x{cin}/{stride}", h, cin, c, stride))
        out.append((f"{stage + 1}_1 {h // stride}x{c}", h // stride, c, c, 1))
        cin = c
    return out


def best_ms(fn, args, calls: int) -> float:
    import jax

    best = float("inf")
    for _ in range(calls):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - t)
    return best * 1e3


def ours_blocks() -> dict[str, tuple[float, float]]:
    """{'HxC': (forward ms, forward + backward ms)} of our stride-1 BasicBlock per stage."""
    from functools import partial

    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    from simclr_jax.core.backend import conv_module
    from simclr_jax.models.resnet import BN_EPSILON, BN_MOMENTUM, BasicBlock, ConvMaker, conv_init

    cls = conv_module(FLAGS.conv_impl)
    conv = ConvMaker(partial(cls, use_bias=False, kernel_init=conv_init))
    norm = partial(nn.BatchNorm, use_running_average=False, momentum=BN_MOMENTUM,
                   epsilon=BN_EPSILON)
    out = {}
    for name, h, cin, c, stride in blocks(FLAGS.width):
        block = BasicBlock(c, stride, conv, norm, use_projection=name.endswith(f"/{stride}"))
        x = jax.random.normal(jax.random.PRNGKey(0), (FLAGS.batch, h, h, cin))
        variables = block.init(jax.random.PRNGKey(1), x)

        def forward(params, x, block=block, stats=variables["batch_stats"]):
            return block.apply({"params": params, "batch_stats": stats}, x,
                               mutable=["batch_stats"])[0]

        fwd = jax.jit(forward)
        grad = jax.jit(jax.grad(lambda p, x, f=forward: jnp.sum(f(p, x) ** 2), argnums=(0, 1)))
        args = (variables["params"], x)
        jax.block_until_ready((fwd(*args), grad(*args)))
        out[name] = (best_ms(fwd, args, FLAGS.calls), best_ms(grad, args, FLAGS.calls))
    return out


def peer_blocks() -> dict[str, tuple[float, float]]:
    cmd = [FLAGS.peer_python, os.path.join(ROOT, "bench", "peer_torch.py"), "--mode=blocks",
           f"--blocks={json.dumps(blocks(FLAGS.width))}", f"--batch_size={FLAGS.batch}",
           f"--steps={FLAGS.calls}"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"peer run failed:\n{done.stderr[-3000:]}")
    line = next(line for line in done.stdout.splitlines() if line.startswith("{"))
    return {k: tuple(v) for k, v in json.loads(line)["blocks"].items()}


def main(argv) -> None:
    del argv
    import jax

    print(f"ResNet-18 blocks, width {FLAGS.width:g}, {FLAGS.batch} views, f32, "
          f"{jax.devices()[0].platform}, ours conv_impl={FLAGS.conv_impl}; load average "
          f"{os.getloadavg()[0]:.1f}", flush=True)
    rounds = {"ours": [], "peer": []}
    for r in range(FLAGS.repeats):
        rounds["ours"].append(ours_blocks())
        if FLAGS.peer_python:
            rounds["peer"].append(peer_blocks())
        print(f"  round {r + 1}/{FLAGS.repeats} done (load average {os.getloadavg()[0]:.1f})",
              flush=True)
    best = {who: {k: tuple(min(rd[k][i] for rd in rs) for i in range(2)) for k in rs[0]}
            for who, rs in rounds.items() if rs}
    for key, (fwd, both) in best["ours"].items():
        line = f"{key:>14}: ours forward {fwd:7.1f} ms, fwd+bwd {both:7.1f} ms"
        if "peer" in best:
            pf, pb = best["peer"][key]
            line += (f" | peer {pf:7.1f}, {pb:7.1f} ms | ours / peer speed: forward "
                     f"{pf / fwd:.2f}x, fwd+bwd {pb / both:.2f}x")
        print(line)
    totals = {who: sum(b for _, b in v.values()) for who, v in best.items()}
    print("sum of the blocks' fwd+bwd: " + ", ".join(f"{w} {t:.1f} ms" for w, t in totals.items())
          + (f" ({totals['peer'] / totals['ours']:.2f}x)" if "peer" in totals else ""))


if __name__ == "__main__":
    app.run(main)
