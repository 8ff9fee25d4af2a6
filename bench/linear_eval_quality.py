"""Quality check: linear eval and kNN of a briefly pretrained encoder vs the same ResNet at its
random initialisation (the pretraining run's own step 0), measured in one run.

    python bench/linear_eval_quality.py  # digits (embedded), ~5 min on 2 cores
    python bench/linear_eval_quality.py --data=cifar10_folder \\
        --cifar_root=../shared/data/cifar10/train              # CIFAR-10 JPEG subset, small ResNet

`--data=cifar10_folder` reads an image folder root/<class>/*.jpg (the CIFAR-10 training images),
keeps a seeded, stratified subset of --train_per_class images per class for training and carves
--val_per_class other images per class as the validation split, so no CIFAR test set is needed.
Prints one JSON line per measurement and a summary table; the numbers go in the README.
"""

import json
import os
import time

from absl import app, flags

flags.DEFINE_enum("data", "digits", ["digits", "cifar10_folder"], "Which data.")
flags.DEFINE_string("cifar_root", "../shared/data/cifar10/train", "root/<class>/*.jpg")
flags.DEFINE_integer("train_per_class", 500, "cifar10_folder: training images per class.")
flags.DEFINE_integer("val_per_class", 100, "cifar10_folder: validation images per class.")
flags.DEFINE_string("workdir", "/tmp/simclr_quality", "Runs and the prepared data go here.")
flags.DEFINE_integer("pretrain_steps", -1, "Override the pretraining steps (-1: default).")
flags.DEFINE_integer("eval_epochs", -1, "Override the linear-eval epochs (-1: default).")
flags.DEFINE_float("width", -1.0, "Override the ResNet-18 width multiplier (-1: default).")
flags.DEFINE_integer("seed", 0, "Pretraining and evaluation seed.")
FLAGS = flags.FLAGS


def digits_configs(tfds_dir: str):
    """(pretraining, linear-eval) configs for the embedded digits: 16 px, R18 at 1/4 width."""
    from simclr_jax import config as default_config
    from simclr_jax import eval_config

    pre = default_config.get_config()
    pre.data_dir = tfds_dir
    pre.num_train_steps = 300
    pre.checkpoint_every_steps = 300
    pre.log_every_steps = 50
    ev = eval_config.get_config("linear_eval")
    ev.num_epochs = 30
    ev.cache_features = True  # no augmentation: the bench measures h, fast and deterministic
    ev.learning_rate = 0.4
    return pre, ev


def cifar_configs(tfds_dir: str):
    """(pretraining, linear-eval) configs for the CIFAR-10 subset: R18 at 1/8 width, 32 px."""
    from simclr_jax import eval_config
    from simclr_jax.config import base_config

    pre = base_config()
    pre.update(dict(dataset="cifar10_folder", data_dir=tfds_dir, train_split="train",
                    eval_split="validation", image_size=32, color_jitter_strength=0.5,
                    blur_prob=0.0, resnet_depth=18, width_multiplier=0.125, proj_out_dim=64,
                    temperature=0.5, batch_size=256, num_train_steps=800, warmup_epochs=2.0,
                    learning_rate=1.0, weight_decay=1e-6, log_every_steps=50,
                    checkpoint_every_steps=800))
    ev = eval_config.base_config()
    ev.update(dict(num_epochs=30, batch_size=256, eval_batch_size=256, cache_features=True,
                   learning_rate=0.4, log_every_steps=100))
    return pre, ev


def register_cifar_folder(root: str, train_per_class: int, val_per_class: int, seed: int):
    """Registers TFDS dataset `cifar10_folder`: a stratified subset of an image folder."""
    import numpy as np
    import tensorflow_datasets as tfds

    class Cifar10Folder(tfds.core.GeneratorBasedBuilder):
        """CIFAR-10 JPEGs from root/<class>/*.jpg: disjoint train / validation subsets."""

        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(32, 32, 3)),
                "label": tfds.features.ClassLabel(names=sorted(os.listdir(root)))}),
                supervised_keys=("image", "label"))

        def _split_generators(self, dl_manager):
            del dl_manager
            rng = np.random.default_rng(seed)
            train, val = [], []
            for label, name in enumerate(sorted(os.listdir(root))):
                files = sorted(os.listdir(os.path.join(root, name)))
                pick = rng.permutation(len(files))[:train_per_class + val_per_class]
                chosen = [(os.path.join(root, name, files[i]), label) for i in pick]
                train += chosen[:train_per_class]
                val += chosen[train_per_class:]
            return {"train": self._generate_examples(train),
                    "validation": self._generate_examples(val)}

        def _generate_examples(self, items):
            for path, label in items:
                yield path, {"image": path, "label": label}

    return Cifar10Folder


def compare(pre, ev, workdir: str) -> dict:
    """Pretrains `pre` in workdir/pretrain, then linear eval + kNN of the final checkpoint and of
    the same architecture at its initialisation. Returns the four accuracies and timings."""
    import jax
    from clu import metric_writers

    from simclr_jax.core import parallel, train
    from simclr_jax.evals import jobs as evaluation
    from simclr_jax.evals import linear_eval_lib as linear_eval
    from simclr_jax.evals import monitor, weighted_knn
    from simclr_jax.evals import pretrained as downstream

    run = os.path.join(workdir, "pretrain")
    t0 = time.time()
    train.train_and_evaluate(pre, run, monitor=monitor.Monitor)
    pretrain_s = time.time() - t0
    mesh = parallel.make_mesh()
    writer = metric_writers.MultiWriter([])
    out = {"pretrain_steps": pre.num_train_steps, "pretrain_s": round(pretrain_s, 1)}
    encoders = {"pretrained": downstream.load(run, mesh=mesh),
                "random_init": downstream.random_init(pre, seed=pre.seed, mesh=mesh)}
    for name, encoder in encoders.items():
        config = evaluation.resolve_config(ev, encoder.config)
        config.pretrained = run
        t0 = time.time()
        results, _ = linear_eval.train_and_eval(encoder, config, mesh, writer)
        splits = evaluation.load_splits(config, "kNN")
        neighbours = weighted_knn.knn_eval(encoder, splits.train_eval, splits.test,
                                           image_size=config.image_size,
                                           k=config.knn_k, temperature=config.knn_temperature,
                                           global_batch=config.eval_batch_size, mesh=mesh)
        out[f"{name}_linear_top1"] = results["top1"]
        out[f"{name}_knn_top1"] = neighbours["knn_top1"]
        out[f"{name}_eval_s"] = round(time.time() - t0, 1)
        out["num_eval_examples"] = results["num_eval_examples"]
        out["num_train_examples"] = results["num_train_examples"]
    out["devices"] = jax.device_count()
    return out


def main(argv) -> None:
    del argv
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.makedirs(FLAGS.workdir, exist_ok=True)
    tfds_dir = os.path.join(FLAGS.workdir, "tfds")
    if FLAGS.data == "digits":
        pre, ev = digits_configs(tfds_dir)
    else:
        register_cifar_folder(FLAGS.cifar_root, FLAGS.train_per_class, FLAGS.val_per_class,
                              FLAGS.seed)
        tfds_dir = os.path.join(tfds_dir, f"c{FLAGS.train_per_class}_{FLAGS.val_per_class}"
                                          f"_s{FLAGS.seed}")
        import tensorflow_datasets as tfds

        tfds.disable_progress_bar()  # prepared once per (subset, seed); reused afterwards
        tfds.builder("cifar10_folder", data_dir=tfds_dir).download_and_prepare()
        pre, ev = cifar_configs(tfds_dir)
    pre.seed = ev.seed = FLAGS.seed
    if FLAGS.pretrain_steps > 0:
        pre.num_train_steps = pre.checkpoint_every_steps = FLAGS.pretrain_steps
    if FLAGS.eval_epochs > 0:
        ev.num_epochs = FLAGS.eval_epochs
    if FLAGS.width > 0:
        pre.width_multiplier = FLAGS.width
    name = f"{FLAGS.data}_w{pre.width_multiplier}_s{pre.num_train_steps}_seed{FLAGS.seed}"
    out = {"data": FLAGS.data, "width": pre.width_multiplier,
           **compare(pre, ev, os.path.join(FLAGS.workdir, name))}
    print(json.dumps(out), flush=True)
    print(f"{'':12s} {'linear top1':>12s} {'kNN top1':>10s}")
    for which in ("pretrained", "random_init"):
        print(f"{which:12s} {out[f'{which}_linear_top1']:12.4f} {out[f'{which}_knn_top1']:10.4f}")


if __name__ == "__main__":
    app.run(main)
