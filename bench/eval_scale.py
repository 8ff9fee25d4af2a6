"""Benchmark: the evaluation jobs at scale, on a generated ImageNet-like image folder.

    python bench/eval_scale.py                        # N=600 and 4N=2400 train images, R50 224 px
    python bench/eval_scale.py --n=300 --forward_depth=18 --forward_width=0.25   # quicker
    python bench/eval_scale.py --repo=/path/to/other/checkout   # the same jobs of another tree

1. Generates --workdir/data_4N: root/{train,val}/<class>/*.jpg, 4N training and N validation
   JPEGs of mixed sizes around 400x350 (random crops of scikit-image's photographs, so they
   compress and decode like photos, 10 classes), and data_N: the first quarter of each class
   (hard links). Reused if already there.
2. Peak host RSS: runs the kNN job and the linear-eval job (1 epoch of random crop + flip
   through the frozen encoder, then the exact eval pass) as a user does, `python -m
   simclr_jax.knn` / `simclr_jax.linear_eval` on data_N and data_4N, each in its own process,
   and reads that process's peak RSS (getrusage in a small launcher that starts it). The
   encoder is a 1-step pretraining of ResNet-18 at 1/8 width (written once in
   --workdir/pretrain); the jobs evaluate at
   --image_size (32 px: the figure of the issue, where main held ~0.6-0.76 MB per image).
   Target: RSS grows by less than 15% from N to 4N.
3. Throughput at --size (224): images/s of the jobs' host input alone on data_4N (the eval pass:
   fused decode + official centre crop, what the kNN bank and every eval pass read; the
   training input: random crop of the full-resolution image + flip, linear eval / fine-tune)
   against the frozen encoder's forward (the jobs' own jitted forward,
   evals/features.py, BN in inference mode) for --forward_depth / --forward_width at
   --forward_batch images. On a CPU-only machine host and device share the cores, so they are
   measured one after the other; on an accelerator they overlap. Compare the ratio.
Seconds depend on the machine and its load.
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

flags.DEFINE_string("workdir", "/tmp/simclr_eval_scale", "Data, the encoder and the job runs.")
flags.DEFINE_integer("n", 600, "N: training images of the small folder (the big one has 4N).")
flags.DEFINE_integer("classes", 10, "Classes of the generated folders.")
flags.DEFINE_integer("image_size", 32, "Input size of the RSS job runs.")
flags.DEFINE_integer("batch", 64, "Global batch (and eval batch) of the RSS job runs.")
flags.DEFINE_list("jobs", ["knn", "linear_eval"], "Jobs whose peak RSS is measured.")
flags.DEFINE_string("repo", ROOT, "Checkout whose jobs are run for the RSS figures.")
flags.DEFINE_integer("size", 224, "Image size of the throughput measurement.")
flags.DEFINE_integer("input_batch", 64, "Batch of the host input measurement.")
flags.DEFINE_float("seconds", 8.0, "Seconds each host input measurement runs (after warm-up).")
flags.DEFINE_integer("forward_depth", 50, "ResNet depth of the timed frozen forward.")
flags.DEFINE_float("forward_width", 1.0, "ResNet width of the timed frozen forward.")
flags.DEFINE_integer("forward_batch", 16, "Batch of the timed frozen forward.")
flags.DEFINE_integer("forward_reps", 3, "Timed forward calls (median, after one warm-up).")
flags.DEFINE_bool("skip_rss", False, "Only the throughput part.")
flags.DEFINE_bool("skip_throughput", False, "Only the RSS part.")
FLAGS = flags.FLAGS
# Runs argv[1:] and prints its peak RSS (the child's own: this launcher is a few MB).
LAUNCHER = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
            "print('PEAK_RSS_KB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, "
            "flush=True); sys.exit(r.returncode)")


def make_folder(root: str, per_class: dict[str, int], classes: int, seed: int) -> None:
    """root/<split>/c<k>/<i>.jpg with per_class[split] JPEGs per class; reused when complete."""
    import numpy as np
    from PIL import Image

    from simclr_jax.data import sources

    photos = None
    rng = np.random.default_rng(seed)
    for split, n in per_class.items():
        for k in range(classes):
            folder = os.path.join(root, split, f"c{k}")
            os.makedirs(folder, exist_ok=True)
            if len(os.listdir(folder)) >= n:
                continue
            if photos is None:
                files = sources._skimage_source("train").files
                photos = [np.asarray(Image.open(str(f)).convert("RGB")) for f in files]
                photos = [p for p in photos if min(p.shape[:2]) >= 300]
            for i in range(n):
                p = photos[rng.integers(len(photos))]
                h, w = p.shape[:2]
                ch, cw = int(h * rng.uniform(0.5, 1.0)), int(w * rng.uniform(0.5, 1.0))
                y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
                scale = rng.uniform(0.8, 1.2)  # mixed sizes around 400x350 (ImageNet-like)
                size = (400, 350) if rng.random() < 0.7 else (350, 400)  # (width, height)
                size = (int(size[0] * scale), int(size[1] * scale))
                img = Image.fromarray(p[y:y + ch, x:x + cw]).resize(size,
                                                                    Image.Resampling.BICUBIC)
                img.save(os.path.join(folder, f"{i:05d}.jpg"), quality=90)


def link_subset(src: str, dst: str, per_class: dict[str, int]) -> None:
    """dst: the first per_class[split] files of each class folder of src (hard links)."""
    for split, n in per_class.items():
        for cls in sorted(os.listdir(os.path.join(src, split))):
            os.makedirs(os.path.join(dst, split, cls), exist_ok=True)
            for f in sorted(os.listdir(os.path.join(src, split, cls)))[:n]:
                target = os.path.join(dst, split, cls, f)
                if not os.path.exists(target):
                    os.link(os.path.join(src, split, cls, f), target)


def pretrain(workdir: str) -> str:
    """A 1-step pretraining (R18 at 1/8 width) on the embedded digits: the encoder to evaluate."""
    from simclr_jax.config import get_config
    from simclr_jax.core import train
    from simclr_jax.evals import pretrained

    run = os.path.join(workdir, "pretrain")
    if os.path.isdir(run) and pretrained.list_steps(run):
        return run
    c = get_config()
    c.data_dir = os.path.join(workdir, "tfds")
    c.width_multiplier, c.proj_out_dim, c.image_size = 0.125, 16, 16
    c.batch_size, c.num_train_steps, c.checkpoint_every_steps, c.log_every_steps = 16, 1, 1, 1
    train.train_and_evaluate(c, run)
    return run


def peak_rss_mb(job: str, run: str, root: str, out: str) -> tuple[float, float, str]:
    """(peak RSS in MB, seconds, summary line) of `python -m simclr_jax.<job>` on folder root."""
    cmd = [sys.executable, "-m", f"simclr_jax.{job}", f"--workdir={out}",
           f"--config.pretrained={run}", f"--config.dataset=folder:{root}",
           f"--config.data_dir={os.path.join(FLAGS.workdir, 'tfds')}",
           "--config.train_split=train", "--config.eval_split=val",
           f"--config.image_size={FLAGS.image_size}", f"--config.batch_size={FLAGS.batch}",
           f"--config.eval_batch_size={FLAGS.batch}", "--config.num_epochs=1",
           "--config.crop_area_min=0.08", "--config.log_every_steps=1000"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": FLAGS.repo}
    log_path = out + ".log"
    os.makedirs(os.path.dirname(out), exist_ok=True)
    t = time.perf_counter()
    with open(log_path, "w") as log:  # a file, not a pipe: nothing to drain while it runs
        # Through a small launcher: Linux starts a child's peak RSS at its parent's (fork
        # copies the high-water mark, exec keeps it), and this process holds TF and JAX.
        proc = subprocess.run([sys.executable, "-c", LAUNCHER, *cmd], cwd=FLAGS.repo, env=env,
                              stdout=log, stderr=subprocess.STDOUT, text=True)
    seconds = time.perf_counter() - t
    output = open(log_path).read()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {proc.returncode}):\n"
                           f"{output[-3000:]}")
    line = next((x for x in output.splitlines() if x.startswith(f"{job}:")), "")
    peak_kb = int(next(x for x in output.splitlines() if x.startswith("PEAK_RSS_KB"))
                  .split()[1])
    return peak_kb / 1024, seconds, line


def rss_part(run: str, roots: dict[str, str], counts: dict[str, int]) -> list[str]:
    summary = []
    for job in FLAGS.jobs:
        rss = {}
        for name, root in roots.items():
            out = os.path.join(FLAGS.workdir, "runs", f"{job}_{name}_{time.time_ns()}")
            mb, seconds, line = peak_rss_mb(job, run, root, out)
            rss[name] = mb
            print(json.dumps({"job": job, "folder": name, "train_images": counts[name],
                              "peak_rss_mb": round(mb, 1), "seconds": round(seconds, 1),
                              "summary": line}), flush=True)
        growth = rss["4N"] / rss["N"] - 1
        summary.append(f"{job}: peak RSS {rss['N']:.0f} MB at N={counts['N']} -> "
                       f"{rss['4N']:.0f} MB at 4N={counts['4N']}: {growth:+.1%} (target < +15%: "
                       f"{'met' if growth < 0.15 else 'NOT met'})")
    return summary


def input_rate(ds, batch: int, seconds: float) -> float:
    """images/s of iterating a batched tf.data pipeline as numpy, after 3 warm-up batches."""
    it = ds.as_numpy_iterator()
    for _ in range(3):
        next(it)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        next(it)
        n += batch
    return n / (time.perf_counter() - t0)


def throughput_part(root: str) -> list[str]:
    import jax
    import numpy as np

    from simclr_jax import config as pretrain_config
    from simclr_jax.core import parallel
    from simclr_jax.data import eval_input, sources
    from simclr_jax.evals import features, pretrained

    c = pretrain_config.get_config()
    c.dataset, c.image_size = f"folder:{root}", FLAGS.size
    c.data_dir = os.path.join(FLAGS.workdir, "tfds")
    train = sources.open_source(c, "train")
    b, size = FLAGS.input_batch, FLAGS.size
    # The eval pass reads the split once: repeat it so the timing never runs out of images.
    eval_ds = eval_input.eval_dataset(train, image_size=size, global_batch=b).repeat()
    train_ds = eval_input.train_dataset(train, seed=0, global_batch=b, image_size=size,
                                        crop_area_min=0.08)
    rates = {"eval pass (decode + centre crop)": input_rate(eval_ds, b, FLAGS.seconds),
             "training input (full-res crop + flip)": input_rate(train_ds, b, FLAGS.seconds)}
    for name, r in rates.items():
        print(f"host input   {name:40s} {r:8.1f} images/s ({len(train)} JPEGs, {size} px, "
              f"batch {b})", flush=True)

    c.resnet_depth, c.width_multiplier = FLAGS.forward_depth, FLAGS.forward_width
    mesh = parallel.make_mesh()
    pre = pretrained.random_init(c, seed=0, mesh=mesh)
    fwd = features._feature_fn(pre.module, mesh)  # the jobs' own frozen forward
    x = parallel.global_batch(mesh, {"image": np.random.default_rng(0).integers(
        0, 256, (FLAGS.forward_batch, size, size, 3), np.uint8)})["image"]
    jax.block_until_ready(fwd(pre.variables, x))  # compile + warm-up
    times = []
    for _ in range(FLAGS.forward_reps):
        t = time.perf_counter()
        jax.block_until_ready(fwd(pre.variables, x))
        times.append(time.perf_counter() - t)
    forward = FLAGS.forward_batch / statistics.median(times)
    what = (f"R{FLAGS.forward_depth} width {FLAGS.forward_width:g}, B={FLAGS.forward_batch}, "
            f"{jax.devices()[0].platform}")
    print(f"frozen forward {what:38s} {forward:8.1f} images/s", flush=True)
    return [f"input / forward [{what}, {size} px]: " + "; ".join(
        f"{name} {r:.0f} img/s = {r / forward:.1f}x the forward" for name, r in rates.items())]


def main(argv) -> None:
    del argv
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from simclr_jax import cli
    from simclr_jax.data import builders

    cli.quiet_library_logs()
    builders.hide_accelerators_from_tf()
    t0 = time.perf_counter()
    print(f"host cores: {len(os.sched_getaffinity(0))}; load average at start: "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    n, k = FLAGS.n, FLAGS.classes
    big, small = (os.path.join(FLAGS.workdir, d) for d in ("data_4N", "data_N"))
    t = time.perf_counter()
    make_folder(big, {"train": 4 * n // k, "val": n // k}, k, seed=0)
    link_subset(big, small, {"train": n // k, "val": n // (4 * k)})
    counts = {"N": n // k * k, "4N": 4 * n // k * k}
    print(f"folders: {small} ({counts['N']} train + {n // (4 * k) * k} val JPEGs), {big} "
          f"({counts['4N']} + {n // k * k}), ready in {time.perf_counter() - t:.0f} s",
          flush=True)
    summary = []
    if not FLAGS.skip_rss:
        summary += rss_part(pretrain(FLAGS.workdir), {"N": small, "4N": big}, counts)
    if not FLAGS.skip_throughput:
        summary += throughput_part(big)
    print(f"\n== summary (load average at end: "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}; total "
          f"{time.perf_counter() - t0:.0f} s)")
    for line in summary:
        print(line)


if __name__ == "__main__":
    app.run(main)
