"""The pretraining config: every key with its default, the embedded defaults, and validation.

Keys are flat, as in the official SimCLR flags, so overrides read `--config.batch_size=512`.
`get_config()` is what `python -m simclr_jax.pretrain` runs without --config (the digits
default); `get_config('visualize')` is the default of `python -m simclr_jax.visualize`.
"""

import ml_collections
from ml_collections import config_dict

from simclr_jax.augment.color import JITTER_IMPLS
from simclr_jax.augment.recipes import DEFAULT as DEFAULT_OPS
from simclr_jax.augment.recipes import parse_ops
from simclr_jax.core.losses import LOSS_REDUCTIONS, LOSSES
from simclr_jax.core.optim import LR_SCALINGS, OPTIMIZERS
from simclr_jax.core.resume import LEGACY
from simclr_jax.data.folders import LABEL_MODES as FOLDER_LABELS
from simclr_jax.data.sources import DATA_MODES
from simclr_jax.errors import UserError, require
from simclr_jax.models.heads import HEAD_MODES
from simclr_jax.models.resnet import PADDINGS, REMAT_MODES, SHORTCUTS, STAGE_SIZES
from simclr_jax.models.simclr import DTYPES

PLACES = ("device", "host")

# Keys added after checkpoints were first written, with the behaviour those checkpoints were
# trained with. A saved config that lacks one of them is read with this value (evaluation,
# downstream loading and resuming), so an old checkpoint keeps its network and its objective;
# new runs get base_config()'s value, the official behaviour.
# config.conv_impl: who computes the ResNet's convolutions (core/backend.py resolves it).
CONV_IMPLS = ("auto", "xla", "im2col", "winograd", "onednn")

def with_legacy_defaults(saved: dict | ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A config read back from a checkpoint, each LEGACY key it lacks set to its legacy value
    and any other key it lacks (one added since) to its default, so the libraries find every
    key they read."""
    saved = saved.to_dict() if isinstance(saved, ml_collections.ConfigDict) else dict(saved)
    return ml_collections.ConfigDict({**base_config().to_dict(), **LEGACY, **saved})


def base_config() -> ml_collections.ConfigDict:
    """All pretraining keys, set to the paper's ImageNet recipe where it has one."""
    c = ml_collections.ConfigDict()
    # Data.
    c.dataset = "imagenet2012"
    c.data_dir = config_dict.placeholder(str)  # None -> TFDS's default (~/tensorflow_datasets)
    c.train_split = "train"
    c.eval_split = "validation"
    c.image_size = 224
    c.crop_area_min = 0.08  # random resized crop area range is (crop_area_min, 1)
    # How the data is read (simclr_jax/data/sources.py). dataset='folder:/path' reads an image
    # folder (root/<split>/<class>/*.jpg, or unlabelled images, flat or nested).
    c.data_mode = "auto"  # TFDS: memory (decoded in RAM) | stream (TFRecords, per-process shard)
    c.folder_labels = "auto"  # folders: subfolders (= classes) | none (unlabelled) | auto
    c.skip_corrupt_images = False  # folders: skip and count unreadable files instead of stopping
    # Where the augmentation runs (a placement: the same recipe, the same views): the host
    # crops + flips in tf.data, then the colour recipe runs in the train step
    # (augment_on='device') or on the host's CPU before the transfer ('host', uint8 views);
    # crop_on='device' moves the crop to the device too (the host decodes each image once into
    # a crop_canvas_size canvas; 0 = auto).
    c.augment_on = "device"
    c.crop_on = "host"
    c.crop_canvas_size = 0
    # Augmentation on the device (host does crop + flip).
    c.color_jitter_strength = 1.0
    # Brightness: 'simclrv2' multiplies by U[1-b, 1+b] (the official code, hard-coded there);
    # 'simclrv1' adds U[-b, b] (the SimCLRv1 code's tf.image.random_brightness).
    c.color_jitter_impl = "simclrv2"
    c.color_jitter_prob = 0.8
    c.grayscale_prob = 0.2
    c.blur_prob = 0.5  # 0 turns blur off (CIFAR)
    # Per-view op lists for augmentation ablations, e.g. 'crop,color' (augment/ops.py OPS; '' is
    # the identity). 'default' = the standard pipeline above (host crop + flip, device colour).
    c.view1_ops = "default"
    c.view2_ops = "default"
    c.noise_std = 0.1  # 'noise' op
    c.cutout_fraction = 0.5  # 'cutout' op: side of the zeroed square / image side
    # Model.
    c.resnet_depth = 50
    c.width_multiplier = 1.0
    # Official ResNet (models/resnet.py): strided convs pad symmetrically then convolve 'VALID'
    # ('fixed'; 'same': Flax 'SAME'); a projection shortcut in the first block of every block
    # group ('every_group'; 'when_needed': only where the shapes change); selective kernels
    # (SimCLRv2 uses 0.0625, with the ResNet-D stem and avg-pool shortcut) and squeeze-excite.
    c.conv_padding = "fixed"
    c.shortcut = "every_group"
    c.sk_ratio = 0.0
    c.se_ratio = 0.0
    c.proj_head_mode = "nonlinear"
    c.num_proj_layers = 2  # 2 = SimCLR v1, 3 = v2
    c.proj_out_dim = 128
    c.online_probe = True  # linear probe on stop_gradient(h) when the dataset has labels
    c.dtype = "float32"
    # auto: oneDNN on CPU (cpu/onednn.py; Winograd / im2col where it cannot build), XLA's
    # convolutions on TPU/GPU. All of them share one parameter layout: switch freely.
    c.conv_impl = "auto"
    c.remat = "none"  # 'blocks': recompute each ResNet block in the backward pass (less memory)
    # Loss.
    c.temperature = 0.1
    c.loss = "nt_xent"  # or nt_logistic, margin_triplet (losses.LOSSES)
    # 'sum': the official objective, mean over view-1 anchors + mean over view-2 anchors (2x the
    # mean); 'mean': the mean over all 2N anchors (the paper's formula, half the gradient).
    c.loss_reduction = "sum"
    c.loss_margin = 0.5  # margin_triplet's m, in units of sim / temperature
    c.normalize_embeddings = True  # L2-normalise z before the loss
    # > 0: NT-Xent in blocks of this many gathered views (core/chunked_loss.py): per-device
    # memory O(local batch x chunk) instead of O(local x global batch); same value and grads.
    c.loss_chunk_size = 0
    # Optimisation.
    c.batch_size = 4096  # global, over all devices and processes
    c.num_epochs = 100
    c.num_train_steps = -1  # > 0 overrides num_epochs
    c.warmup_epochs = 10.0
    c.optimizer = "lars"
    c.learning_rate = 0.3
    c.lr_scaling = "linear"  # linear: lr * B / 256; sqrt: lr * sqrt(B)
    c.weight_decay = 1e-6
    c.momentum = 0.9
    c.lars_trust_coefficient = 0.001
    # Bookkeeping.
    c.seed = 0
    c.log_every_steps = 100
    c.checkpoint_every_steps = 1000
    c.keep_checkpoints = 3
    # Stall watchdog (core/watchdog.py): a loop phase (input, step, checkpoint save) lasting this
    # many seconds ends the job (exit 75, every thread's stack in <workdir>/logs) so a launcher
    # restarts it; 0 turns it off. 10 min: hundreds of accelerator steps, and more than the
    # first step's compilation or a checkpoint save of the largest models take.
    c.stall_timeout_s = 600.0
    # kNN monitor (evals/monitor.py): weighted kNN of eval_split on the train split's h, logged
    # with the metrics every knn_every_steps (a multiple of log_every_steps); 0 turns it off.
    c.knn_every_steps = 0
    c.knn_k = 200
    c.knn_temperature = 0.1
    return c


def get_config(variant: str = "default") -> ml_collections.ConfigDict:
    """The embedded defaults: 'default' (digits, the pretrain job without --config) or
    'visualize' (the ImageNet augmentation on scikit-image's photos, for the visualize job)."""
    if variant == "visualize":
        c = base_config()
        c.dataset = "skimage_photos"
        c.train_split = "train"
        return c
    if variant != "default":
        raise ValueError(f"unknown variant {variant!r}: use 'default' or 'visualize'")
    return digits_config()


def digits_config() -> ml_collections.ConfigDict:
    """SimCLR on scikit-learn's digits (real data that ships in a package, no download):
    a ResNet-18 at 1/4 width on 8x8 digits upsampled to 16 px. Runs on a laptop CPU in a few
    minutes and shows learning: the loss falls and the online probe's accuracy rises well above
    chance (10%)."""
    c = base_config()
    c.dataset = "sklearn_digits"
    c.train_split = "train"
    c.eval_split = "test"
    c.image_size = 16
    c.crop_area_min = 0.3  # 8x8 digits: a 0.08 crop would keep a couple of pixels
    c.color_jitter_strength = 0.5
    c.blur_prob = 0.0
    c.resnet_depth = 18
    c.width_multiplier = 0.25
    c.proj_out_dim = 64
    c.temperature = 0.2
    c.batch_size = 128
    c.num_epochs = 20
    c.warmup_epochs = 2.0
    c.learning_rate = 1.0
    c.weight_decay = 1e-6
    c.log_every_steps = 10
    c.checkpoint_every_steps = 100
    return c


def cifar10_config() -> ml_collections.ConfigDict:
    """The official README's CIFAR-10 pretraining command (google-research/simclr README.md,
    "Pretraining", identical in tf2/README.md): `--train_batch_size=512 --train_epochs=1000
    --learning_rate=1.0 --weight_decay=1e-4 --temperature=0.5 --dataset=cifar10 --image_size=32
    --resnet_depth=18 --use_blur=False --color_jitter_strength=0.5`, the other flags at their
    run.py defaults (LARS, momentum 0.9, linear lr scaling -> 2.0, 10 warmup epochs, 3-layer
    head of 128 outputs). The README reports about 91% linear evaluation
    (configs/linear_eval_cifar10.py). configs/cifar10.py runs it; the sweeps start from it."""
    c = base_config()
    c.dataset = "cifar10"
    c.train_split = "train"
    c.eval_split = "test"
    c.image_size = 32
    c.color_jitter_strength = 0.5
    c.blur_prob = 0.0  # no blur at 32 px
    c.resnet_depth = 18
    c.temperature = 0.5
    c.batch_size = 512
    c.num_epochs = 1000
    c.warmup_epochs = 10.0
    c.optimizer = "lars"
    c.learning_rate = 1.0
    c.lr_scaling = "linear"
    c.weight_decay = 1e-4
    c.num_proj_layers = 3
    c.proj_out_dim = 128
    c.log_every_steps = 50
    c.checkpoint_every_steps = 1000
    return c


def validate(c: ml_collections.ConfigDict) -> None:
    """Raises UserError naming the first bad key, its value and what is expected."""
    require(c.temperature > 0, "temperature", f"must be > 0, got {c.temperature}")
    require(c.loss in LOSSES, "loss", f"must be one of {LOSSES}, got {c.loss!r}")
    require(c.loss_reduction in LOSS_REDUCTIONS, "loss_reduction",
            f"must be one of {LOSS_REDUCTIONS}, got {c.loss_reduction!r}")
    require(c.color_jitter_impl in JITTER_IMPLS, "color_jitter_impl",
            f"must be one of {JITTER_IMPLS}, got {c.color_jitter_impl!r}")
    require(c.conv_padding in PADDINGS, "conv_padding",
            f"must be one of {PADDINGS}, got {c.conv_padding!r}")
    require(c.shortcut in SHORTCUTS, "shortcut",
            f"must be one of {SHORTCUTS}, got {c.shortcut!r}")
    require(c.sk_ratio >= 0, "sk_ratio", f"must be >= 0 (0 = no selective kernels, SimCLRv2: "
            f"0.0625), got {c.sk_ratio}")
    require(c.se_ratio >= 0, "se_ratio", f"must be >= 0 (0 = no squeeze-excite), got "
            f"{c.se_ratio}")
    for key in ("view1_ops", "view2_ops"):
        if c[key] != DEFAULT_OPS:
            try:
                parse_ops(c[key])
            except ValueError as e:
                raise UserError(f"config.{key}: {e}") from None
    require(c.loss_chunk_size >= 0, "loss_chunk_size",
            f"must be >= 0 (0 = off), got {c.loss_chunk_size}")
    require(c.loss_chunk_size == 0 or c.loss == "nt_xent", "loss_chunk_size",
            f"the chunked loss is NT-Xent only: set config.loss='nt_xent' or "
            f"config.loss_chunk_size=0, got loss={c.loss!r}")
    require(c.noise_std >= 0, "noise_std", f"must be >= 0, got {c.noise_std}")
    require(0 < c.cutout_fraction <= 1, "cutout_fraction",
            f"must be in (0, 1], got {c.cutout_fraction}")
    require(c.proj_head_mode in HEAD_MODES, "proj_head_mode",
            f"must be one of {HEAD_MODES}, got {c.proj_head_mode!r}")
    require(c.num_proj_layers >= 1, "num_proj_layers", f"must be >= 1, got {c.num_proj_layers}")
    require(c.proj_out_dim >= 1, "proj_out_dim", f"must be >= 1, got {c.proj_out_dim}")
    require(c.optimizer in OPTIMIZERS, "optimizer",
            f"must be one of {OPTIMIZERS}, got {c.optimizer!r}")
    require(c.lr_scaling in LR_SCALINGS, "lr_scaling",
            f"must be one of {LR_SCALINGS}, got {c.lr_scaling!r}")
    require(c.dtype in DTYPES, "dtype", f"must be one of {tuple(DTYPES)}, got {c.dtype!r}")
    require(c.conv_impl in CONV_IMPLS, "conv_impl",
            f"must be one of {CONV_IMPLS}, got {c.conv_impl!r}")
    require(c.remat in REMAT_MODES, "remat", f"must be one of {REMAT_MODES}, got {c.remat!r}")
    require(c.resnet_depth in STAGE_SIZES, "resnet_depth",
            f"must be one of {tuple(STAGE_SIZES)}, got {c.resnet_depth}")
    require(c.width_multiplier > 0, "width_multiplier",
            f"must be > 0, got {c.width_multiplier}")
    require(c.image_size > 0, "image_size", f"must be > 0, got {c.image_size}")
    require(0 < c.crop_area_min <= 1, "crop_area_min",
            f"must be in (0, 1], got {c.crop_area_min}")
    require(c.data_mode in DATA_MODES, "data_mode",
            f"must be one of {DATA_MODES}, got {c.data_mode!r}")
    require(c.folder_labels in FOLDER_LABELS, "folder_labels",
            f"must be one of {FOLDER_LABELS}, got {c.folder_labels!r}")
    require(c.augment_on in PLACES, "augment_on",
            f"must be one of {PLACES}, got {c.augment_on!r}")
    require(c.crop_on in PLACES, "crop_on", f"must be one of {PLACES}, got {c.crop_on!r}")
    require(c.crop_on == "host" or c.augment_on == "device", "crop_on",
            "crop_on='device' needs augment_on='device' (the colour ops follow the crop)")
    require(c.crop_canvas_size >= 0, "crop_canvas_size",
            f"must be >= 0 (0 = auto), got {c.crop_canvas_size}")
    if c.crop_on == "device":  # custom ops crop whole images themselves, where they run
        require(c.view1_ops == c.view2_ops == DEFAULT_OPS, "view1_ops",
                "custom view ops crop the whole image themselves: use crop_on='host'")
    require(c.batch_size > 0, "batch_size", f"must be > 0, got {c.batch_size}")
    require(c.num_train_steps > 0 or c.num_epochs > 0, "num_epochs",
            "num_epochs or num_train_steps must be > 0")
    require(c.learning_rate >= 0, "learning_rate", f"must be >= 0, got {c.learning_rate}")
    require(0 <= c.momentum < 1, "momentum", f"must be in [0, 1), got {c.momentum}")
    require(c.lars_trust_coefficient > 0, "lars_trust_coefficient",
            f"must be > 0, got {c.lars_trust_coefficient}")
    require(c.seed >= 0, "seed", f"must be >= 0, got {c.seed}")
    require(c.weight_decay >= 0, "weight_decay", f"must be >= 0, got {c.weight_decay}")
    require(c.warmup_epochs >= 0, "warmup_epochs", f"must be >= 0, got {c.warmup_epochs}")
    for key in ("color_jitter_prob", "grayscale_prob", "blur_prob"):
        require(0 <= c[key] <= 1, key, f"must be a probability in [0, 1], got {c[key]}")
    require(c.color_jitter_strength >= 0, "color_jitter_strength",
            f"must be >= 0, got {c.color_jitter_strength}")
    for key in ("log_every_steps", "checkpoint_every_steps", "keep_checkpoints"):
        require(c[key] >= 1, key, f"must be >= 1, got {c[key]}")
    require(c.knn_every_steps >= 0 and c.knn_every_steps % c.log_every_steps == 0,
            "knn_every_steps", f"must be 0 (off) or a multiple of config.log_every_steps="
            f"{c.log_every_steps}, got {c.knn_every_steps}")
    require(c.stall_timeout_s >= 0, "stall_timeout_s",
            f"must be >= 0 (0 = no stall watchdog), got {c.stall_timeout_s}")
    require(c.knn_k >= 1, "knn_k", f"must be >= 1, got {c.knn_k}")
    require(c.knn_temperature > 0, "knn_temperature", f"must be > 0, got {c.knn_temperature}")
