"""Benchmark: the SimCLR train step in views/s, as a fraction of the matmul peak, part by part,
and against the PyTorch + lightly peer (bench/peer_torch.py) measured in the same run.

    python bench/train_step.py                                   # R18 CIFAR stem, 32 px, B=128
    python bench/train_step.py --peer_python=/work/peer-venv/bin/python --repeats=5
    python bench/train_step.py --width=0.25 --batch_size=256 --conv_impls=auto --parts
    python bench/train_step.py --batch_size=16 --width=0.125 --steps=1 --repeats=1   # quick

Prints the f32 matmul peak (2048^2, best of 10) before and after, the step's FLOPs (XLA's cost
analysis of the XLA-convolution step, so every implementation is charged the same FLOPs) and,
for each --conv_impls entry and the peer, the per-step seconds of --repeats rounds of --steps
steps, the rounds interleaved (ours, peer, ours, peer, ...) so that load from other processes
falls on both alike: min and median views/s, the fraction of the matmul peak, and the ratios
ours / peer of the minima and of the medians.

--parts adds a breakdown of the first implementation's step, each part jitted and timed alone
(best of --steps): host input (tf.data pipeline -> host->device copy: `core.train.input_batches`
on random in-memory images, or --cifar_dir's JPEGs), device augmentation
(`augment.views.augment_views`), encoder + head forward (train mode), the loss
(NT-Xent + probe, forward and backward on fixed z), forward + backward of the whole model
(`train.loss_and_grads`; backward = this - forward - loss), the optimiser (LARS update + the
step's metrics). The parts run separately, so their sum differs from the fused step a little.

The step is the real one (`core.train.make_train_step`): device augmentation included. The
peer's step takes float views (in PyTorch the augmentation runs in the data loader's worker
processes), so `--augment_on=host` (our step without the device augmentation) is the
like-for-like comparison; both are printed when --peer_python is given.
"""

import json
import os
import statistics
import subprocess
import sys
import time

from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

flags.DEFINE_integer("batch_size", 128, "Global batch (images; 2 views each).")
flags.DEFINE_float("width", 1.0, "ResNet-18 width multiplier.")
flags.DEFINE_integer("depth", 18, "ResNet depth.")
flags.DEFINE_integer("image_size", 32, "View size (<= 32: CIFAR stem).")
flags.DEFINE_integer("steps", 3, "Timed steps per round (after one warm-up step).")
flags.DEFINE_integer("repeats", 3, "Interleaved rounds (ours, peer, ours, peer, ...).")
flags.DEFINE_string("dtype", "float32", "Compute dtype.")
flags.DEFINE_list("conv_impls", ["auto"], "config.conv_impl values to compare (auto, xla, "
                  "im2col, winograd, onednn).")
flags.DEFINE_list("augment_on", ["device"], "config.augment_on values to time (device, host).")
flags.DEFINE_string("remat", "none", "config.remat.")
flags.DEFINE_bool("parts", False, "Also time the parts of the step (forward, backward, ...).")
flags.DEFINE_string("cifar_dir", "", "Image folder for the host-input part ('' = random "
                    "images in memory).")
flags.DEFINE_string("peer_python", os.environ.get("SIMCLR_PEER_PYTHON", ""),
                    "Interpreter with torch + lightly: runs bench/peer_torch.py interleaved.")
FLAGS = flags.FLAGS


def bench_config(conv_impl: str, augment_on: str = "device"):
    from simclr_jax.config import base_config

    c = base_config()
    c.update(dict(image_size=FLAGS.image_size, resnet_depth=FLAGS.depth,
                  width_multiplier=FLAGS.width, batch_size=FLAGS.batch_size, temperature=0.5,
                  color_jitter_strength=0.5, blur_prob=0.0, dtype=FLAGS.dtype,
                  learning_rate=1.0, conv_impl=conv_impl, augment_on=augment_on,
                  remat=FLAGS.remat))
    return c


class Ours:
    """The jitted train step of one config on random uint8 views, ready to time."""

    def __init__(self, c):
        import numpy as np

        from simclr_jax.core import backend, optim, parallel, train
        from simclr_jax.models import build_model

        self.config, self.mesh = c, parallel.make_mesh()
        self.model = build_model(c, num_classes=10, conv=backend.conv_module(c.conv_impl))
        self.schedule = optim.learning_rate_schedule(c, 100, 10_000)
        self.tx = optim.build_optimizer(c, self.schedule)
        self.state = train.init_state_on_mesh(self.model, self.tx, c, self.mesh)
        self.step = train.make_train_step(self.model, self.tx, self.schedule, c, self.mesh)
        rng = np.random.default_rng(0)
        b, s = c.batch_size, c.image_size
        self.batch = parallel.global_batch(self.mesh, {
            "view1": rng.integers(0, 256, (b, s, s, 3), dtype=np.uint8),
            "view2": rng.integers(0, 256, (b, s, s, 3), dtype=np.uint8),
            "label": rng.integers(0, 10, (b,), dtype=np.int32)})
        cost = self.step.lower(self.state, self.batch).compile().cost_analysis()
        cost = cost[0] if isinstance(cost, list) else cost
        self.flops = float(cost["flops"]) * self.mesh.devices.size  # per device -> total
        self.run(1)

    def run(self, n: int) -> list[float]:
        import jax

        times = []
        for _ in range(n):
            t = time.perf_counter()
            self.state, m = self.step(self.state, self.batch)
            jax.block_until_ready(m)
            times.append(time.perf_counter() - t)
        return times


class Peer:
    """bench/peer_torch.py --serve in a subprocess: run(n) -> its per-step seconds."""

    def __init__(self, python: str):
        self.proc = subprocess.Popen(
            [python, os.path.join(ROOT, "bench", "peer_torch.py"), "--mode=step", "--serve",
             f"--width={FLAGS.width}", f"--batch_size={FLAGS.batch_size}",
             f"--image_size={FLAGS.image_size}", "--warmup=1"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.info = json.loads(self.proc.stdout.readline())["ready"]

    def run(self, n: int) -> list[float]:
        self.proc.stdin.write(f"{n}\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())["seconds"]

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def timed(fn, *args):
    """A zero-argument callable that runs the jitted fn(*args) once and returns its seconds."""
    import jax

    jax.block_until_ready(fn(*args))  # compile + warm-up

    def once() -> float:
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        return time.perf_counter() - t

    return once


def host_input(c):
    """A callable: seconds for one global batch from the input pipeline onto the devices."""
    import numpy as np

    from simclr_jax.core import parallel, train
    from simclr_jax.data import sources
    from simclr_jax.data.splits import ArraySplit

    if FLAGS.cifar_dir:
        split = sources.open_source(_with(c, dataset=f"folder:{FLAGS.cifar_dir}"), "train")
    else:
        rng = np.random.default_rng(0)
        n, s = max(4 * c.batch_size, 1024), c.image_size
        split = ArraySplit(rng.integers(0, 256, (n, s, s, 3), dtype=np.uint8),
                           rng.integers(0, 10, (n,), dtype=np.int32), 10)
    batches = parallel.prefetch_to_mesh(train.input_batches(split, c, 0),
                                        parallel.make_mesh(), drop=("position",))
    next(batches)

    def once() -> float:
        t = time.perf_counter()
        next(batches)["view1"].block_until_ready()
        return time.perf_counter() - t

    return once


def _with(c, **overrides):
    c = c.copy_and_resolve_references()
    c.update(overrides)
    return c


def step_parts(ours: Ours) -> dict:
    """{part: callable returning its seconds}: each part of the step jitted alone."""
    from functools import partial

    import jax
    import jax.numpy as jnp
    import optax

    from simclr_jax.augment import views
    from simclr_jax.augment.recipes import Augmentation
    from simclr_jax.core import losses, optim, train

    c, model, batch = ours.config, ours.model, ours.batch
    # A copy: the step donates ours.state's buffers on every call.
    state = jax.tree_util.tree_map(jnp.copy, ours.state)
    parts = {"host input (tf.data -> device)": host_input(c)}
    augment = jax.jit(partial(views.augment_views, Augmentation.from_config(c)))
    x = augment(state.step, batch)
    parts["device augmentation"] = timed(augment, state.step, batch)

    @jax.jit
    def forward(params, batch_stats, x):
        return model.apply({"params": params, "batch_stats": batch_stats}, x, train=True,
                           mutable=["batch_stats"])

    parts["forward (encoder + head, train mode)"] = timed(forward, state.params,
                                                          state.batch_stats, x)
    (z, _, logits), _ = forward(state.params, state.batch_stats, x)
    labels = jnp.repeat(batch["label"], 2)

    @jax.jit
    def loss_grad(z, logits):
        def f(z, logits):
            zz = z.reshape((-1, 2, z.shape[-1]))
            loss, _ = losses.contrastive_loss(zz[:, 0], zz[:, 1], c.temperature,
                                              mesh=ours.mesh)
            probe = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
            return loss + probe
        return jax.grad(f, argnums=(0, 1))(z, logits)

    parts["loss (NT-Xent + probe, value and grad)"] = timed(loss_grad, z, logits)
    grads_fn = jax.jit(partial(train.loss_and_grads, model=model, config=c, mesh=ours.mesh))
    parts["forward + backward + loss"] = timed(grads_fn, state.params, state.batch_stats, x,
                                               labels)
    grads = grads_fn(state.params, state.batch_stats, x, labels)[0]

    @jax.jit
    def update(state, grads):
        updates, opt_state = ours.tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        finite = jnp.all(jnp.array([jnp.all(jnp.isfinite(p))
                                    for p in jax.tree_util.tree_leaves(params)]))
        return params, opt_state, optim.weight_decay_term(state.params, c.weight_decay), finite

    parts["optimiser (LARS + step metrics)"] = timed(update, state, grads)
    return parts


def summary(times: list[float], views: int) -> str:
    return (f"min {min(times) * 1e3:8.1f} ms  median {statistics.median(times) * 1e3:8.1f} ms"
            f"  = {views / min(times):7.1f} / {views / statistics.median(times):7.1f} views/s")


def main(argv) -> None:
    del argv
    import jax

    from simclr_jax.cpu import collectives, host_memory

    # As the jobs do (cli.run_command); JAX_CPU_ENABLE_ASYNC_DISPATCH=true measures without.
    collectives.keep_collectives_in_order()
    reuse = host_memory.keep_freed_host_memory(host_memory.run_cpu_steps_inline())
    views = 2 * FLAGS.batch_size
    print(f"devices={jax.device_count()} ({jax.default_backend()}) R{FLAGS.depth} "
          f"width={FLAGS.width} {FLAGS.image_size}px B={FLAGS.batch_size} ({views} views) "
          f"dtype={FLAGS.dtype}, step memory reused: {reuse}; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)
    runs = {}
    for impl in FLAGS.conv_impls:
        for place in FLAGS.augment_on:
            runs[f"ours conv_impl={impl} augment_on={place}"] = Ours(bench_config(impl, place))
    xla = [r for k, r in runs.items() if "=xla " in k]
    ref_flops = xla[0].flops if xla else Ours(bench_config("xla")).flops
    peer = None
    if FLAGS.peer_python:
        peer = Peer(FLAGS.peer_python)
        runs[f"peer torch {peer.info['torch']} ({peer.info['threads']} threads)"] = peer
    parts = step_parts(next(iter(runs.values()))) if FLAGS.parts else {}
    peak_fn = matmul_once()
    print(f"step FLOPs (XLA cost analysis, XLA convs): {ref_flops / views / 1e9:.2f} GFLOP/view",
          flush=True)
    times: dict[str, list[float]] = {k: [] for k in runs}
    part_times: dict[str, list[float]] = {k: [] for k in parts}
    peaks: list[float] = []
    for r in range(FLAGS.repeats):  # rounds: every figure sees the same spread of load
        peaks.append(max(peak_fn() for _ in range(3)))
        for name, run in runs.items():
            times[name] += run.run(FLAGS.steps)
        for name, once in parts.items():
            part_times[name] += [once() for _ in range(FLAGS.steps)]
        print(f"  round {r + 1}/{FLAGS.repeats} done (load average {os.getloadavg()[0]:.1f})",
              flush=True)
    peak = max(peaks)
    print(f"matmul peak (f32, 2048^2, best over the rounds): {peak / 1e9:.1f} GFLOP/s "
          f"(rounds: {', '.join(f'{p / 1e9:.0f}' for p in peaks)})")
    for name, ts in times.items():
        print(f"{name:45s} {summary(ts, views)}  {ref_flops / min(ts) / peak:5.1%} of peak")
    if peer is not None:
        peer.close()
        p = times[next(k for k in times if k.startswith("peer"))]
        for name, ts in times.items():
            if name.startswith("ours"):
                print(f"ratio {name} / peer: {min(p) / min(ts):.2f}x (minima), "
                      f"{statistics.median(p) / statistics.median(ts):.2f}x (medians)")
    if parts:
        name = next(iter(runs))
        step = min(times[name])
        best = {k: min(v) for k, v in part_times.items()}
        fwd, loss = best["forward (encoder + head, train mode)"], best[
            "loss (NT-Xent + probe, value and grad)"]
        best["backward (= fwd+bwd+loss - fwd - loss)"] = best.pop(
            "forward + backward + loss") - fwd - loss
        print(f"parts of '{name}' (each jitted alone, min over the rounds; step "
              f"{step * 1e3:.1f} ms):")
        for part, dt in best.items():
            print(f"  {part:45s} {dt * 1e3:8.1f} ms  {dt / step:6.1%} of the step")
        device = sum(v for k, v in best.items() if not k.startswith("host"))
        print(f"  {'sum of the device parts':45s} {device * 1e3:8.1f} ms  {device / step:6.1%}")
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")


def matmul_once(n: int = 2048):
    """A callable: FLOP/s of one f32 n x n matmul."""
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
    once = timed(jax.jit(lambda a: a @ a), a)
    return lambda: 2 * n**3 / once()


if __name__ == "__main__":
    app.run(main)
