"""The transfer job's config (simclr_jax/transfer.py): every key with its default, the paper's
protocol (SimCLR appendix B.8, after Kornblith et al. 2019).

    python -m simclr_jax.transfer --config.pretrained=runs/default --workdir=runs/transfer
    python -m simclr_jax.transfer --config=configs/transfer.py --config.pretrained=RUN \\
        --config.datasets=paper --config.protocol=both --workdir=runs/transfer_paper

Without --config the job runs this default: the linear protocol on the embedded digits.
"""

import ml_collections
import numpy as np
from ml_collections import config_dict

from simclr_jax.errors import require
from simclr_jax.models.resnet import STAGE_SIZES

PROTOCOLS = ("linear", "finetune")
LINEAR_SOLVERS = ("sklearn", "device")
PROTOCOL_CHOICES = ("linear", "finetune", "both")


def _logspace(low: float, high: float, num: int) -> tuple[float, ...]:
    return tuple(float(v) for v in np.logspace(np.log10(low), np.log10(high), num))


def get_config() -> ml_collections.ConfigDict:
    """All keys; protocol values are the paper's."""
    c = ml_collections.ConfigDict()
    # A pretraining workdir or step directory; `random` (the default pretraining architecture,
    # resnet_depth / width_multiplier / image_size below override it) or `random:RUN` (RUN's
    # architecture) for the random-init baseline.
    c.pretrained = config_dict.placeholder(str)
    # Comma-separated TFDS names, folder:/root, sklearn_digits or `paper`; NAME@METRIC picks
    # the headline metric (evals/transfer_lib/datasets.py).
    c.datasets = "sklearn_digits"
    c.protocol = "linear"  # linear | finetune | both
    c.data_dir = config_dict.placeholder(str)  # TFDS data_dir (None: ~/tensorflow_datasets)
    c.image_size = config_dict.placeholder(int)  # None: the pretraining run's input size
    c.resnet_depth = config_dict.placeholder(int)  # random init only
    c.width_multiplier = config_dict.placeholder(float)  # random init only
    c.val_fraction = 0.2  # held out of train when a dataset has no validation split
    c.seed = 0
    c.eval_batch_size = 256  # global batch of feature extraction and evaluation passes
    # Linear: L2-regularised multinomial logistic regression, L-BFGS, 45 log-spaced strengths.
    # Features of the centre square of this fraction of the shorter side, resized to the input
    # size: 1.0 is the paper's (shorter side resized, centre crop); 0.875 the eval jobs'.
    c.linear_crop_fraction = 1.0
    c.linear_num_lambdas = 45
    c.linear_lambda_min = 1e-6
    c.linear_lambda_max = 1e5
    c.linear_max_iter = 1000  # L-BFGS iterations per fit
    c.linear_tol = 1e-4  # L-BFGS gradient tolerance of the mean objective (scikit-learn's)
    # sklearn: scikit-learn on the host (features in host memory); device: optax L-BFGS on
    # the accelerator (large sets such as SUN397 at ResNet-50 width; single-label only).
    c.linear_solver = "sklearn"
    c.linear_threads = 0  # threads of the fit; 0: every core (1 on a machine shared by jobs)
    # Fine-tune: whole network, Nesterov momentum 0.9; lr x decay grid (decay divided by lr).
    c.finetune_learning_rates = _logspace(1e-4, 0.1, 7)
    c.finetune_weight_decays = _logspace(1e-6, 1e-3, 7) + (0.0,)
    c.finetune_steps = 20000
    c.finetune_batch_size = 256
    c.finetune_crop_area_min = 0.08  # random resized crop (+ flip)
    c.log_every_steps = 100
    c.checkpoint_every_steps = 1000
    return c


def protocols(c: ml_collections.ConfigDict) -> tuple[str, ...]:
    """The protocols config.protocol asks for, in run order."""
    return PROTOCOLS if c.protocol == "both" else (c.protocol,)


def validate(c: ml_collections.ConfigDict) -> None:
    """Raises UserError naming the first bad key, its value and what is expected."""
    require(bool(c.pretrained), "pretrained",
            "not set: pass a pretraining run (--config.pretrained=runs/default) or `random` "
            "for the random-init baseline")
    require(c.protocol in PROTOCOL_CHOICES, "protocol",
            f"must be one of {PROTOCOL_CHOICES}, got {c.protocol!r}")
    require(0 < c.val_fraction < 1, "val_fraction", f"must be in (0, 1), got {c.val_fraction}")
    require(c.linear_num_lambdas >= 1, "linear_num_lambdas",
            f"must be >= 1, got {c.linear_num_lambdas}")
    require(0 < c.linear_lambda_min <= c.linear_lambda_max, "linear_lambda_min",
            f"must be in (0, linear_lambda_max], got {c.linear_lambda_min}")
    for key in ("linear_max_iter", "finetune_steps", "finetune_batch_size", "eval_batch_size",
                "log_every_steps"):
        require(c[key] >= 1, key, f"must be >= 1, got {c[key]}")
    require(c.linear_solver in LINEAR_SOLVERS, "linear_solver",
            f"must be one of {LINEAR_SOLVERS}, got {c.linear_solver!r}")
    require(0 < c.linear_crop_fraction <= 1, "linear_crop_fraction",
            f"must be in (0, 1], got {c.linear_crop_fraction}")
    require(c.linear_threads >= 0, "linear_threads",
            f"must be >= 0 (0: every core), got {c.linear_threads}")
    require(c.linear_tol > 0, "linear_tol", f"must be > 0, got {c.linear_tol}")
    require(0 < c.finetune_crop_area_min <= 1, "finetune_crop_area_min",
            f"must be in (0, 1], got {c.finetune_crop_area_min}")
    for key in ("finetune_learning_rates", "finetune_weight_decays"):
        values = c[key]
        require(isinstance(values, (tuple, list)) and len(values) > 0 and all(
            isinstance(v, (int, float)) and v >= 0 for v in values), key,
            f"must be a non-empty tuple of numbers >= 0, e.g. --config.{key}='(0.01, 0.1)', "
            f"got {values!r}")
    require(all(v > 0 for v in c.finetune_learning_rates), "finetune_learning_rates",
            "must be > 0 (the decay is divided by the learning rate)")
    require(c.image_size is None or c.image_size > 0, "image_size",
            f"must be > 0, got {c.image_size}")
    require(c.resnet_depth is None or c.resnet_depth in STAGE_SIZES, "resnet_depth",
            f"must be one of {tuple(STAGE_SIZES)}, got {c.resnet_depth}")
    require(c.checkpoint_every_steps >= 0, "checkpoint_every_steps",
            f"must be >= 0, got {c.checkpoint_every_steps}")
