"""The evaluation jobs' config (linear eval, fine-tune, kNN): every key with its default.

Keys are flat like the pretraining config. Data keys left at None are taken from the pretraining
run's own config (saved in its checkpoints), so `--config.pretrained=DIR` alone is a full command:

    python -m simclr_jax.linear_eval --config.pretrained=runs/default --workdir=runs/linear
    python -m simclr_jax.finetune --config.pretrained=runs/default --workdir=runs/ft
    python -m simclr_jax.knn --config.pretrained=runs/default --workdir=runs/knn

Without --config each job runs its embedded default for the digits dataset (`get_config(job)`).
"""

import ml_collections
from ml_collections import config_dict

from simclr_jax.core.optim import LR_SCALINGS, OPTIMIZERS
from simclr_jax.errors import require
from simclr_jax.models.resnet import STAGE_SIZES

JOBS = ("linear_eval", "finetune", "knn")
# BN of the frozen stages (0 <= fine_tune_after_block <= 3): 'batch_stats' as the official TF1
# code (model.py: only fine_tune_after_block=4 runs the ResNet's BN in inference mode), or
# 'inference' (their moving statistics, kept as pretrained).
FROZEN_BN_MODES = ("batch_stats", "inference")
# Inherited from the pretraining run's config when left at None.
INHERITED = ("dataset", "data_dir", "train_split", "eval_split", "image_size", "data_mode",
             "folder_labels", "skip_corrupt_images")


def base_config() -> ml_collections.ConfigDict:
    """All keys; optimisation defaults are the paper's linear evaluation (momentum, lr 0.1)."""
    c = ml_collections.ConfigDict()
    # What to evaluate: a pretraining workdir (newest step) or one step directory.
    c.pretrained = config_dict.placeholder(str)
    # Data (None -> the pretraining run's value).
    c.dataset = config_dict.placeholder(str)
    c.data_dir = config_dict.placeholder(str)
    c.train_split = config_dict.placeholder(str)
    c.eval_split = config_dict.placeholder(str)
    c.image_size = config_dict.placeholder(int)
    c.data_mode = config_dict.placeholder(str)  # TFDS: auto | memory | stream (data/sources.py)
    c.folder_labels = config_dict.placeholder(str)  # folders: auto | subfolders | none
    c.skip_corrupt_images = config_dict.placeholder(bool)  # folders: skip unreadable files
    c.crop_area_min = 0.08  # training crop area range (crop_area_min, 1), as in the paper
    c.train_augment = True  # random crop + flip for training; False: the eval preprocessing
    c.label_fraction = 1.0  # fine-tune on this fraction of the labels (stratified, seeded)
    # Expected architecture: None trusts the checkpoint; a value is checked against it.
    c.resnet_depth = config_dict.placeholder(int)
    c.width_multiplier = config_dict.placeholder(float)
    # Classifier and what it reads.
    c.ft_proj_selector = 0  # 0 = h; k = after projection-head layer k (fine-tune only)
    c.fine_tune_after_block = -1  # -1 trains all; 0 freezes the stem; k freezes blocks 1..k
    c.frozen_bn = "batch_stats"  # FROZEN_BN_MODES
    c.zero_init_classifier = True  # the official zero_init_logits_layer
    # Start the classifier from the checkpoint's online probe (an imported official checkpoint:
    # its head_supervised); with num_train_steps=0 it is evaluated as it is, without training.
    c.classifier_from_probe = False
    # Linear eval: compute frozen features once (no augmentation), on the devices and written to
    # <workdir>/features/ (reused by a rerun); kNN: also cache them there.
    c.cache_features = False
    # Linear eval with cache_features: select among these learning rates x weight decays
    # (empty: config.learning_rate / weight_decay) on the last hparam_val_fraction of
    # train_split, then train the chosen one on all of it; e.g. (0.01, 0.1, 1.0).
    c.hparam_learning_rates = ()
    c.hparam_weight_decays = ()
    c.hparam_val_fraction = 0.01  # train[:99%] / train[99%:]
    # Optimisation.
    c.batch_size = 256  # global
    c.eval_batch_size = 256  # global; the last batch is padded and masked (exact metrics)
    c.num_epochs = 100
    c.num_train_steps = -1  # > 0 overrides num_epochs; 0 (with classifier_from_probe): no training
    c.warmup_epochs = 0.0
    c.optimizer = "momentum"  # Nesterov momentum; or "lars", "adam"
    c.learning_rate = 0.1
    c.lr_scaling = "linear"  # linear: lr * B / 256; sqrt: lr * sqrt(B)
    c.weight_decay = 0.0
    c.momentum = 0.9
    c.lars_trust_coefficient = 0.001
    # kNN (weighted, as in Wu et al. 2018 InstDisc) on L2-normalised h.
    c.knn_k = 200
    c.knn_temperature = 0.1
    # Bookkeeping.
    c.seed = 0
    c.log_every_steps = 100
    # Linear eval / fine-tune: save the classifier's train state every this many steps (and on
    # SIGTERM, and at the end); a rerun resumes from it. 0: only on SIGTERM and at the end.
    c.checkpoint_every_steps = 1000
    return c


def get_config(job: str = "linear_eval") -> ml_collections.ConfigDict:
    """Embedded defaults for the digits pretraining default (`configs/default.py`)."""
    if job not in JOBS:
        raise ValueError(f"unknown job {job!r}: use one of {JOBS}")
    c = base_config()
    c.crop_area_min = 0.3  # 8x8 digits: a 0.08 crop would keep a couple of pixels
    c.batch_size = 128
    c.eval_batch_size = 128
    c.num_epochs = 30
    c.log_every_steps = 50
    if job == "finetune":
        c.label_fraction = 0.1
        c.learning_rate = 0.05  # the paper's fine-tuning lr: 0.05 x B / 256
        c.num_epochs = 60
    return c


def validate(c: ml_collections.ConfigDict) -> None:
    """Raises UserError naming the first bad key, its value and what is expected."""
    require(bool(c.pretrained), "pretrained",
            "not set: pass the pretraining run, e.g. --config.pretrained=runs/default (its "
            "workdir, newest step) or --config.pretrained=runs/default/checkpoints/200")
    require(0 < c.label_fraction <= 1, "label_fraction",
            f"must be in (0, 1], got {c.label_fraction} (e.g. 0.01 or 0.1 for 1% / 10%)")
    require(c.optimizer in OPTIMIZERS, "optimizer",
            f"must be one of {OPTIMIZERS}, got {c.optimizer!r}")
    require(c.lr_scaling in LR_SCALINGS, "lr_scaling",
            f"must be one of {LR_SCALINGS}, got {c.lr_scaling!r}")
    require(-1 <= c.fine_tune_after_block <= 4, "fine_tune_after_block",
            f"must be in -1..4 (-1 trains everything, 4 freezes the whole encoder), "
            f"got {c.fine_tune_after_block}")
    require(c.ft_proj_selector >= 0, "ft_proj_selector",
            f"must be >= 0 (0 = h, k = after head layer k), got {c.ft_proj_selector}")
    require(0 < c.crop_area_min <= 1, "crop_area_min",
            f"must be in (0, 1], got {c.crop_area_min}")
    for key in ("batch_size", "eval_batch_size", "knn_k", "log_every_steps"):
        require(c[key] >= 1, key, f"must be >= 1, got {c[key]}")
    require(c.num_train_steps != 0 or c.classifier_from_probe, "num_train_steps",
            "0 (no training) needs config.classifier_from_probe=True (evaluate the checkpoint's "
            "own classifier); otherwise use num_train_steps > 0 or -1 (num_epochs)")
    require(c.num_train_steps >= 0 or c.num_epochs > 0, "num_epochs",
            "num_epochs or num_train_steps must be > 0")
    require(c.frozen_bn in FROZEN_BN_MODES, "frozen_bn",
            f"must be one of {FROZEN_BN_MODES}, got {c.frozen_bn!r}")
    require(c.knn_temperature > 0, "knn_temperature", f"must be > 0, got {c.knn_temperature}")
    for key in ("learning_rate", "weight_decay", "warmup_epochs"):
        require(c[key] >= 0, key, f"must be >= 0, got {c[key]}")
    require(c.image_size is None or c.image_size > 0, "image_size",
            f"must be > 0, got {c.image_size}")
    require(c.resnet_depth is None or c.resnet_depth in STAGE_SIZES, "resnet_depth",
            f"must be one of {tuple(STAGE_SIZES)} (or unset: the checkpoint's), "
            f"got {c.resnet_depth}")
    require(c.width_multiplier is None or c.width_multiplier > 0, "width_multiplier",
            f"must be > 0 (or unset: the checkpoint's), got {c.width_multiplier}")
    require(0 <= c.momentum < 1, "momentum", f"must be in [0, 1), got {c.momentum}")
    require(c.lars_trust_coefficient > 0, "lars_trust_coefficient",
            f"must be > 0, got {c.lars_trust_coefficient}")
    require(c.seed >= 0, "seed", f"must be >= 0, got {c.seed}")
    require(c.checkpoint_every_steps >= 0, "checkpoint_every_steps",
            f"must be >= 0, got {c.checkpoint_every_steps}")
    require(0 < c.hparam_val_fraction < 1, "hparam_val_fraction",
            f"must be in (0, 1), got {c.hparam_val_fraction} (0.01 holds out train[99%:])")
    for key in ("hparam_learning_rates", "hparam_weight_decays"):
        values = c[key]
        require(isinstance(values, (tuple, list)) and all(
            isinstance(v, (int, float)) and v >= 0 for v in values), key,
            f"must be a tuple of numbers >= 0, e.g. --config.{key}='(0.1, 0.3, 1.0)', "
            f"got {values!r}")
