"""Benchmark: the input pipeline against the train step that consumes it.

    python bench/input_pipeline.py                      # CIFAR folder (32 px) + 224 px JPEGs
    python bench/input_pipeline.py --cases=cifar10 --seconds=2          # quicker
    python bench/input_pipeline.py --cifar_widths=0.25,1.0 --imagenet_depth=50 \
        --imagenet_width=1 --imagenet_step_batch=4     # also the configs' own models (slow)

For each case it times, with the project's own functions and the host cores this process may use:
  host   images/s (two views each) of `pretrain_input.pretrain_batches` ->
         `parallel.prefetch_to_mesh` (what core/train.py iterates), for the three augmentation
         placements (default: host crop + flip, device colour; augment_on=host; crop_on=device),
         and of its stages alone (read the files, decode them) to name the limiting host stage;
  device images/s of the jitted train step (`train.make_train_step`) for the same config, at a
         smaller batch (and, for 224 px, a smaller model: flags) so it runs on a CPU, and of the
         jitted device augmentation alone (`views.augment_views`), whose share of the step is
         printed per placement.
Then the ratio pipeline throughput / step consumption, the target (>= 2x for CIFAR, device
augmentation <= 10% of the step) and the limiting stage.

Cases: `cifar10` = configs/cifar10.py on the image folder --cifar_dir (50,000 CIFAR-10 JPEGs);
`imagenet224` = configs/imagenet.py on --num_jpegs ImageNet-size JPEGs (about 400x350 crops of
scikit-image's photographs) written to --jpeg_dir (a temporary folder by default).

Host and device share the same cores on a CPU-only machine, so both rates are measured
separately, one after the other; on an accelerator they run concurrently. Seconds depend on the
machine and its load; compare the ratios.
"""

import os
import statistics
import sys
import tempfile
import time

from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

flags.DEFINE_list("cases", ["cifar10", "imagenet224"], "Which configs to benchmark.")
flags.DEFINE_string("cifar_dir", os.path.join(ROOT, "..", "shared", "data", "cifar10", "train"),
                    "Image folder of the CIFAR case (root/<class>/*.jpg).")
flags.DEFINE_string("jpeg_dir", "", "Folder for the generated 224 px case's JPEGs ('' = temp).")
flags.DEFINE_integer("num_jpegs", 500, "Generated ImageNet-size JPEGs.")
flags.DEFINE_float("seconds", 5.0, "Seconds each host pipeline measurement runs (after warm-up).")
flags.DEFINE_integer("imagenet_batch", 128, "Pipeline batch of the 224 px case (config: 4096).")
flags.DEFINE_list("cifar_widths", ["0.25"],
                  "ResNet-18 widths of the CIFAR train step (1.0 = the config's model).")
flags.DEFINE_integer("cifar_step_batch", 64, "Train-step batch of the CIFAR case (config: 512).")
flags.DEFINE_integer("imagenet_depth", 18, "ResNet depth of the 224 px step (config: 50).")
flags.DEFINE_float("imagenet_width", 0.25, "ResNet width of the 224 px step (config: 1.0).")
flags.DEFINE_integer("imagenet_step_batch", 16, "Train-step batch of the 224 px case.")
flags.DEFINE_string("conv_impl", "auto", "config.conv_impl of the steps (auto: the default).")
flags.DEFINE_string("imagenet_dtype", "float32", "Compute dtype of the 224 px step (config: "
                    "bfloat16, which is not faster on a CPU).")
flags.DEFINE_integer("steps", 3, "Timed train steps (median; after one warm-up step).")
FLAGS = flags.FLAGS

PLACEMENTS = {  # name -> config overrides
    "default (host crop, device colour)": dict(augment_on="device", crop_on="host"),
    "augment_on=host (all on host)": dict(augment_on="host", crop_on="host"),
    "crop_on=device (host decodes only)": dict(augment_on="device", crop_on="device"),
}


def host_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def make_jpegs(folder: str, n: int) -> str:
    """n JPEGs of about 400x350 (portrait or landscape), random crops of scikit-image's
    photographs, so they compress and decode like photos; reused if already there."""
    import numpy as np
    from PIL import Image

    from simclr_jax.data import sources

    os.makedirs(folder, exist_ok=True)
    if len([f for f in os.listdir(folder) if f.endswith(".jpg")]) >= n:
        return folder
    source = sources._skimage_source("train")
    photos = [np.asarray(Image.open(str(f)).convert("RGB")) for f in source.files]
    photos = [p for p in photos if min(p.shape[:2]) >= 300]
    rng = np.random.default_rng(0)
    for i in range(n):
        p = photos[i % len(photos)]
        h, w = p.shape[:2]
        ch, cw = (int(h * rng.uniform(0.6, 1.0)), int(w * rng.uniform(0.6, 1.0)))
        y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        size = (400, 350) if rng.random() < 0.7 else (350, 400)  # (width, height)
        img = Image.fromarray(p[y:y + ch, x:x + cw]).resize(size, Image.Resampling.BICUBIC)
        if rng.random() < 0.5:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        img.save(os.path.join(folder, f"{i:05d}.jpg"), quality=90)
    return folder


def case_config(case: str, jpeg_dir: str):
    """The pipeline config of `case`: its configs/*.py file, reading the benchmark's folder."""
    import importlib.util

    name = "cifar10" if case == "cifar10" else "imagenet"
    spec = importlib.util.spec_from_file_location(
        f"bench_config_{name}", os.path.join(ROOT, "configs", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    c = module.get_config()
    if case == "cifar10":
        c.dataset = "folder:" + os.path.abspath(FLAGS.cifar_dir)
    else:
        c.dataset = "folder:" + jpeg_dir
        c.batch_size = FLAGS.imagenet_batch
        c.dtype = FLAGS.imagenet_dtype
    c.conv_impl = FLAGS.conv_impl
    return c


def time_host(source, config, seconds: float) -> float:
    """images/s of pretrain_batches -> prefetch_to_mesh over `seconds` after 3 warm-up batches."""
    import jax

    from simclr_jax.core import parallel
    from simclr_jax.data import pretrain_input as pipeline

    mesh = parallel.make_mesh()
    data = pipeline.pretrain_batches(source, config)
    batches = parallel.prefetch_to_mesh(data, mesh, drop=("position",))
    for _ in range(3):
        jax.block_until_ready(next(batches))
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        jax.block_until_ready(next(batches))
        n += config.batch_size
    return n / (time.perf_counter() - t0)


def time_stage(source, config, stage: str, seconds: float) -> float:
    """images/s of the pipeline's first stages alone, with its parallelism: 'read' (the
    example stream of pretrain_input.examples + pretrain_input.load: the file bytes) or 'decode'
    (+ a full decode of each image, which the views replace by a fused decode-and-crop per view)."""
    import tensorflow as tf

    from simclr_jax.augment import tf_image as host_augment
    from simclr_jax.data import pretrain_input as pipeline

    read = pipeline.load(source)
    ds = pipeline.examples(source, seed=config.seed, global_batch=config.batch_size,
                           start_step=0, process_index=0, process_count=1)

    def fn(x, label, pos):
        data, _ = read(x, label)
        return (tf.strings.length(data) if stage == "read" else
                tf.shape(host_augment.decode(data)))

    it = iter(ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE).batch(config.batch_size)
              .prefetch(2))
    for _ in range(3):
        next(it)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        next(it)
        n += config.batch_size
    return n / (time.perf_counter() - t0)


def sample_batch(source, config, batch: int) -> dict:
    """One real host batch of `batch` images for `config` (its placement), as numpy."""
    from simclr_jax.data import pretrain_input as pipeline

    c = config.copy_and_resolve_references()
    c.batch_size = batch
    b = next(pipeline.pretrain_batches(source, c))
    b.pop("position")
    return b


def median_time(fn, reps: int) -> float:
    import jax

    jax.block_until_ready(fn())  # compile + warm-up
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def time_device(source, config, placements: dict, batch: int, num_classes: int):
    """(images/s of the full train step at the default placement, {placement: seconds of the
    jitted device augmentation alone}, step seconds) at `batch` images."""
    import jax

    from simclr_jax.augment import views
    from simclr_jax.augment.recipes import Augmentation
    from simclr_jax.core import backend, optim, parallel, train
    from simclr_jax.models import build_model

    mesh = parallel.make_mesh()
    c = config.copy_and_resolve_references()
    c.batch_size = batch
    model = build_model(c, num_classes=num_classes, conv=backend.conv_module(c.conv_impl))
    schedule = optim.learning_rate_schedule(c, 100, 10_000)
    tx = optim.build_optimizer(c, schedule)
    state = train.init_state_on_mesh(model, tx, c, mesh)
    step = train.make_train_step(model, tx, schedule, c, mesh)
    aug = {}
    for name, overrides in placements.items():
        cp = c.copy_and_resolve_references()
        cp.update(overrides)
        host = parallel.global_batch(mesh, sample_batch(source, cp, batch))
        f = jax.jit(lambda s, b, cp=cp: views.augment_views(Augmentation.from_config(cp), s, b))
        aug[name] = median_time(lambda f=f, host=host: f(0, host), 5)
        if name.startswith("default"):
            default_batch = host
    box = [state]

    def one_step():
        box[0], m = step(box[0], default_batch)
        return m

    t_step = median_time(one_step, FLAGS.steps)
    return batch / t_step, aug, t_step


def run_case(case: str, jpeg_dir: str) -> list[str]:
    """Measures one case and prints its table; returns its summary lines."""
    from simclr_jax.data import sources

    config = case_config(case, jpeg_dir)
    t = time.perf_counter()
    source = sources.open_source(config, config.train_split)
    size = config.image_size
    print(f"\n== {case}: {source.name} ({len(source)} images), {size} px, pipeline batch "
          f"{config.batch_size}; folder listed in {time.perf_counter() - t:.1f} s", flush=True)

    stages = {s: time_stage(source, config, s, FLAGS.seconds / 2)
              for s in ("read", "decode")}
    for s, r in stages.items():
        print(f"host stage alone  {s:36s} {r:9.0f} images/s", flush=True)
    host = {}
    for name, overrides in PLACEMENTS.items():
        cp = config.copy_and_resolve_references()
        cp.update(overrides)
        host[name] = time_host(source, cp, FLAGS.seconds)
        print(f"host pipeline     {name:36s} {host[name]:9.0f} images/s (x2 views)", flush=True)

    if case == "cifar10":
        models = [(18, float(w), FLAGS.cifar_step_batch) for w in FLAGS.cifar_widths]
    else:
        models = [(FLAGS.imagenet_depth, FLAGS.imagenet_width, FLAGS.imagenet_step_batch)]
    num_classes = source.num_classes
    summary = []
    for depth, width, batch in models:
        c = config.copy_and_resolve_references()
        c.resnet_depth, c.width_multiplier = depth, width
        rate, aug, t_step = time_device(source, c, PLACEMENTS, batch, num_classes)
        what = f"R{depth} width {width:g}, B={batch}"
        t_aug0 = aug[next(iter(PLACEMENTS))]
        print(f"train step        {what:36s} {rate:9.1f} images/s "
              f"({t_step * 1e3:.0f} ms/step)", flush=True)
        for name in PLACEMENTS:
            # The step of another placement: the model work stays, the augmentation changes.
            t_p = t_step - t_aug0 + aug[name]
            share = aug[name] / t_p
            ratio = host[name] / (batch / t_p)
            print(f"  {name:36s} device aug {aug[name] * 1e3:7.1f} ms = {share:5.1%} of the "
                  f"step; pipeline / step = {ratio:7.1f}x", flush=True)
        ratio0, share0 = host[next(iter(PLACEMENTS))] / rate, t_aug0 / t_step
        limit = ("the train step (host pipeline faster)" if ratio0 >= 1 else
                 "the host pipeline")
        t_pipe, t_read = 1 / host[next(iter(PLACEMENTS))], 1 / stages["read"]
        host_limit = ("reading the files" if t_read >= t_pipe / 2 else
                      "the two views' fused decode-and-crop + bicubic resize + flip")
        summary.append(
            f"{case} [{what}]: pipeline {host[next(iter(PLACEMENTS))]:.0f} img/s, step "
            f"{rate:.1f} img/s -> ratio {ratio0:.1f}x (target >= 2x: "
            f"{'met' if ratio0 >= 2 else 'NOT met'}); device aug {share0:.1%} of the step "
            f"(target <= 10%: {'met' if share0 <= 0.10 else 'NOT met'}); limiting stage: "
            f"{limit}; on the host: {host_limit} (of the host time per image: reading "
            f"{t_read / t_pipe:.0%}, the rest {1 - t_read / t_pipe:.0%})")
    return summary


def main(argv) -> None:
    del argv
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import jax

    from simclr_jax import cli
    from simclr_jax.data import builders as datasets

    cli.quiet_library_logs()
    datasets.hide_accelerators_from_tf()
    t0 = time.perf_counter()
    print(f"host cores available: {host_cores()}; jax devices: {jax.device_count()} "
          f"({jax.devices()[0].platform}); load average at start: "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    summary = []
    with tempfile.TemporaryDirectory() as tmp:
        for case in FLAGS.cases:
            if case not in ("cifar10", "imagenet224"):
                raise app.UsageError(f"unknown case {case!r}: cifar10 or imagenet224")
            jpeg_dir = ""
            if case == "imagenet224":
                jpeg_dir = os.path.abspath(FLAGS.jpeg_dir or os.path.join(tmp, "jpegs"))
                t = time.perf_counter()
                make_jpegs(jpeg_dir, FLAGS.num_jpegs)
                print(f"\n{FLAGS.num_jpegs} JPEGs (~400x350) in {jpeg_dir} "
                      f"({time.perf_counter() - t:.1f} s)", flush=True)
            summary += run_case(case, jpeg_dir)
    print("\n== summary (load average at end: "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}; total "
          f"{time.perf_counter() - t0:.0f} s)")
    for line in summary:
        print(line)


if __name__ == "__main__":
    app.run(main)
