"""Shared bases of the experiments: the CPU-sized run and the paper-sized run.

cpu:   CIFAR-10 subset from an image folder of CIFAR-10 JPEGs (root/<class>/*.jpg; the sweep's
       --cifar10_folder or $SIMCLR_CIFAR10_FOLDER): 500 train + 100 validation per class, 16 px,
       ResNet-18 at 1/8 width, B=128, 150 steps (~4 epochs), kNN on the 5,000 train images.
paper: the paper's CIFAR-10 recipe (config.cifar10_config: R18, B=512, tau=0.5, s=0.5, 1000
       epochs) on the TFDS cifar10 dataset (prepare it with `tfds build cifar10`), 100 epochs for
       ablations.
"""

import os
from collections.abc import Callable

import ml_collections

from simclr_jax.config import cifar10_config
from simclr_jax.research import sweep_data

CPU_DATASET = "cifar10_folder_subset/small"


def cpu_base(data_dir: str = "runs/sweeps/tfds") -> ml_collections.ConfigDict:
    """A few minutes per variant on 2 CPU cores."""
    c = cifar10_config()
    c.dataset = CPU_DATASET
    c.data_dir = os.environ.get("SIMCLR_SWEEP_TFDS", data_dir)
    c.train_split, c.eval_split = "train", "validation"
    c.image_size = 16
    c.crop_area_min = 0.2  # 16 px: a 0.08 crop keeps ~4x4 pixels
    c.width_multiplier = 0.125
    c.proj_out_dim = 64
    c.batch_size = 128
    c.num_train_steps = 150
    c.warmup_epochs = 0.5
    c.learning_rate = 1.0
    c.log_every_steps = 50
    c.checkpoint_every_steps = 150
    c.keep_checkpoints = 1
    return c


def paper_base() -> ml_collections.ConfigDict:
    """The paper's CIFAR-10 recipe, shortened to 100 epochs as for its ablations."""
    c = cifar10_config()
    c.num_epochs = 100
    return c


def base(scale: str) -> ml_collections.ConfigDict:
    return cpu_base() if scale == "cpu" else paper_base()


def prepare(scale: str) -> Callable[[str | None], None] | None:
    """fn(cifar10_folder) preparing the cpu dataset from the CIFAR-10 image folder before the
    first variant (None at paper scale: TFDS cifar10 is prepared with `tfds build`)."""
    if scale != "cpu":
        return None

    def run(folder: str | None) -> None:
        sweep_data.prepare(CPU_DATASET, cpu_base().data_dir, folder)

    return run
