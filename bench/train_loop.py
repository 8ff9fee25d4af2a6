"""Benchmark: the whole training loop end to end (the pretrain command, `train_and_evaluate`) on
the CIFAR-10 image folder, against the PyTorch + lightly peer's loop, interleaved.

    python bench/train_loop.py --cifar_dir=../shared/data/cifar10/train \
        --peer_python=/work/peer-venv/bin/python
    python bench/train_loop.py --cifar_dir=DIR --steps=20 --repeats=1      # quicker, ours only

Ours: `python -m simclr_jax.pretrain --config=configs/cifar10.py` (the paper's CIFAR recipe)
with `--config.dataset=folder:<cifar_dir> --config.width_multiplier=<width>
--config.batch_size=<batch>`, a fresh workdir per round; the figure is the images_per_sec of
metrics.jsonl's rows after the first (which includes compilation): images over wall time of
everything the loop does (input pipeline, host->device copies, step, metrics, logging).
Peer: bench/peer_torch.py --mode=loop on the same folder, model, recipe and batch, timed after
its warm-up steps (DataLoader workers started), wall time per step including waits for data.
Rounds alternate ours, peer, ours, peer, ... so other load on the machine falls on both; the
ratio is of the medians (and of the best rounds).
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile

from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

flags.DEFINE_string("cifar_dir", os.path.join(ROOT, "..", "shared", "data", "cifar10", "train"),
                    "CIFAR-10 training images as an image folder (root/<class>/*.jpg).")
flags.DEFINE_float("width", 0.25, "ResNet-18 width multiplier.")
flags.DEFINE_integer("batch_size", 256, "Global batch.")
flags.DEFINE_integer("steps", 40, "Steps per round of ours (the first log_every are excluded).")
flags.DEFINE_integer("log_every", 10, "Our log interval (each row's images_per_sec).")
flags.DEFINE_integer("peer_steps", 30, "Timed steps per round of the peer (after 3 warm-up).")
flags.DEFINE_integer("peer_workers", 2, "The peer's DataLoader worker processes.")
flags.DEFINE_integer("repeats", 2, "Interleaved rounds.")
flags.DEFINE_multi_string("override", [], "Extra --config.KEY=VALUE for ours (repeatable).")
flags.DEFINE_string("peer_python", os.environ.get("SIMCLR_PEER_PYTHON", ""),
                    "Interpreter with torch + lightly ('' = ours only).")
FLAGS = flags.FLAGS


def ours_round() -> float:
    """images/s of one pretraining run, after its first log row."""
    with tempfile.TemporaryDirectory() as workdir:
        cmd = [sys.executable, "-m", "simclr_jax.pretrain", "--config=configs/cifar10.py",
               f"--workdir={workdir}",
               f"--config.dataset=folder:{os.path.abspath(FLAGS.cifar_dir)}",
               f"--config.width_multiplier={FLAGS.width}",
               f"--config.batch_size={FLAGS.batch_size}",
               f"--config.num_train_steps={FLAGS.steps}",
               f"--config.log_every_steps={FLAGS.log_every}",
               f"--config.checkpoint_every_steps={FLAGS.steps}",
               *[f"--config.{o}" for o in FLAGS.override]]
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
        env.pop("XLA_FLAGS", None)  # the user's machine: its real (one) CPU device
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"our run failed:\n{done.stderr[-3000:]}")
        with open(os.path.join(workdir, "metrics.jsonl")) as f:
            rows = [json.loads(line) for line in f if line.strip()]
    rates = [r["images_per_sec"] for r in rows if "images_per_sec" in r][1:]
    print(f"  ours: rows {[round(r, 1) for r in rates]} images/s", flush=True)
    # Equal-length intervals: the mean of the rows' rates is images over time.
    return len(rates) / sum(1 / r for r in rates)


def proj_layers() -> int:
    """Our run's projection head depth: configs/cifar10.py's, or an --override of it."""
    for o in reversed(FLAGS.override):
        if o.startswith("num_proj_layers="):
            return int(o.split("=", 1)[1])
    sys.path.insert(0, ROOT)
    from simclr_jax.config import cifar10_config  # what configs/cifar10.py runs

    return cifar10_config().num_proj_layers


def peer_round(head_layers: int) -> float:
    cmd = [FLAGS.peer_python, os.path.join(ROOT, "bench", "peer_torch.py"), "--mode=loop",
           f"--width={FLAGS.width}", f"--batch_size={FLAGS.batch_size}",
           f"--proj_layers={head_layers}",
           f"--cifar_dir={os.path.abspath(FLAGS.cifar_dir)}", f"--steps={FLAGS.peer_steps}",
           "--warmup=3", f"--workers={FLAGS.peer_workers}"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"peer run failed:\n{done.stderr[-3000:]}")
    info = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("{")))
    print(f"  peer: {info['images_per_sec']:.1f} images/s (torch {info['torch']}, "
          f"{info['threads']} threads)", flush=True)
    return info["images_per_sec"]


def main(argv) -> None:
    del argv
    print(f"end-to-end loop: configs/cifar10.py, R18 width {FLAGS.width:g}, B={FLAGS.batch_size}"
          f", {FLAGS.cifar_dir}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} "
          f"cores", flush=True)
    ours, peer = [], []
    head_layers = proj_layers() if FLAGS.peer_python else 0
    for r in range(FLAGS.repeats):
        print(f"round {r + 1}/{FLAGS.repeats} (load average {os.getloadavg()[0]:.1f})",
              flush=True)
        ours.append(ours_round())
        if FLAGS.peer_python:
            peer.append(peer_round(head_layers))
    print(f"ours: {max(ours):.1f} best / {statistics.median(ours):.1f} median images/s after "
          f"compilation")
    if peer:
        print(f"peer: {max(peer):.1f} best / {statistics.median(peer):.1f} median images/s")
        print(f"ratio ours / peer: {max(ours) / max(peer):.2f}x (best rounds), "
              f"{statistics.median(ours) / statistics.median(peer):.2f}x (medians)")
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    app.run(main)
