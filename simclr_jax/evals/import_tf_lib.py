"""Importing an official SimCLR checkpoint (TF1 saver or TF2 object checkpoint) as one of ours.

    import_checkpoint("gs://simclr-checkpoints/simclrv2/pretrained/r50_1x_sk0", "runs/r50_1x")

reads the checkpoint through tf.train.load_checkpoint (local paths and gs:// via tf.io.gfile),
infers the architecture from its shapes (models/tf_checkpoint.py), and writes a normal
checkpoint of ours at step = the TF global_step: params and BN statistics of the encoder, the
projection head and, when the checkpoint has head_supervised, the online probe; a fresh
optimiser state; and a pretraining config whose architecture keys say what was found. The
evaluation jobs and load_encoder read it unchanged. The command is simclr_jax/import_tf.py.
"""

import dataclasses
import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from etils import epath

from simclr_jax.config import base_config
from simclr_jax.core import checkpointing, optim
from simclr_jax.core.train import TrainState
from simclr_jax.data import builders
from simclr_jax.errors import UserError
from simclr_jax.models import build_model
from simclr_jax.models import tf_checkpoint as tc


def resolve_prefix(checkpoint: str) -> str:
    """The checkpoint prefix for a prefix (PATH with PATH.index) or a directory (its
    `checkpoint` file's newest entry, else its newest *.index)."""
    import tensorflow as tf

    if tf.io.gfile.exists(checkpoint + ".index"):
        return checkpoint
    if tf.io.gfile.isdir(checkpoint):
        if latest := tf.train.latest_checkpoint(checkpoint):
            return latest
        indexes = sorted(tf.io.gfile.glob(f"{checkpoint.rstrip('/')}/*.index"))
        if indexes:
            return _newest(indexes)[: -len(".index")]
        if tf.io.gfile.exists(f"{checkpoint.rstrip('/')}/saved_model.pb"):
            raise UserError(f"{checkpoint} is a TF2 SavedModel; --checkpoint needs a TF "
                            f"checkpoint (TF1 saver files PREFIX.index/.data-*, or a TF2 "
                            f"tf.train.Checkpoint written by the official tf2/run.py)")
    raise UserError(f"no TF checkpoint at {checkpoint} (--checkpoint): pass a checkpoint prefix "
                    f"such as DIR/model.ckpt-250228 (with DIR/model.ckpt-250228.index next to "
                    f"it) or a directory holding one")


def _newest(indexes: list[str]) -> str:
    """The index with the highest step number in its name (model.ckpt-N.index)."""
    def step(path: str) -> int:
        digits = "".join(c if c.isdigit() else " " for c in path.rsplit("/", 1)[-1]).split()
        return int(digits[-1]) if digits else -1
    return max(indexes, key=step)


def pretrain_config(arch: tc.Architecture, global_step: int) -> ml_collections.ConfigDict:
    """Our pretraining config for an imported network (the official settings it implies)."""
    c = base_config()
    if arch.cifar_stem:
        c.dataset, c.train_split, c.eval_split, c.image_size = "cifar10", "train", "test", 32
    else:
        c.dataset, c.train_split, c.eval_split, c.image_size = (
            "imagenet2012", "train", "validation", 224)
    c.resnet_depth, c.width_multiplier = arch.depth, arch.width_multiplier
    c.sk_ratio, c.se_ratio = arch.sk_ratio, arch.se_ratio
    c.conv_padding, c.shortcut = "fixed", "every_group"
    c.proj_head_mode, c.num_proj_layers = arch.proj_head_mode, arch.num_proj_layers
    c.proj_out_dim = arch.proj_out_dim
    c.online_probe = arch.num_classes > 0
    c.num_train_steps = max(global_step, 1)
    return c


def read_checkpoint(prefix: str, ema: bool):
    """(format, {network variable: numpy value}, global_step) of a TF checkpoint."""
    import tensorflow as tf

    try:
        reader = tf.train.load_checkpoint(prefix)
        names = reader.get_variable_to_shape_map()
    except (tf.errors.OpError, ValueError) as e:
        raise UserError(f"cannot read TF checkpoint {prefix} (--checkpoint): "
                        f"{str(e).splitlines()[0]}") from None
    tf2 = tc.tf2_format(names)
    wanted = tc.model_variables(names, ema=ema)
    if ema and not any(n.startswith("ema_model/") for n in names):
        raise UserError(f"--ema: checkpoint {prefix} has no ema_model/ variables (only the "
                        f"official SimCLRv2 releases keep an EMA copy); rerun without --ema")
    shapes = {k: tuple(names[v]) for k, v in wanted.items()}
    try:
        arch = tc.infer_architecture(shapes, tf2=tf2)
    except tc.CheckpointMismatch as e:
        raise UserError(f"checkpoint {prefix}: {e}") from None
    values = {k: reader.get_tensor(v) for k, v in wanted.items()}
    step_key = "global_step" + (tc.TF2_SUFFIX if tf2 else "")
    step = int(reader.get_tensor(step_key)) if step_key in names else 0
    return ("tf2" if tf2 else "tf1"), arch, values, step


def import_checkpoint(checkpoint: str, workdir: str, *, ema: bool = False) -> dict:
    """Writes the official checkpoint `checkpoint` as a checkpoint of ours in `workdir`;
    returns a summary (also written to <workdir>/import.json)."""
    builders.hide_accelerators_from_tf()
    if checkpointing.saved_config(workdir) is not None:
        raise UserError(f"{checkpointing.checkpoint_dir(workdir)} already holds checkpoints: "
                        f"pass an empty --workdir")
    prefix = resolve_prefix(checkpoint)
    fmt, arch, values, step = read_checkpoint(prefix, ema)
    tree = tc.to_flax(arch, values, tf2=fmt == "tf2")
    config = pretrain_config(arch, step)
    # The layout and our model must agree leaf for leaf (they do for every architecture the
    # tests build); this keeps a mismatch from ever writing a checkpoint.
    model = build_model(config, num_classes=arch.num_classes)
    x = jax.ShapeDtypeStruct((1, config.image_size, config.image_size, 3), jnp.float32)
    expected = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x, train=False), x)
    got = jax.tree_util.tree_map(lambda a: a.shape, tree)
    if jax.tree_util.tree_map(lambda s: tuple(s.shape), dict(expected)) != got:
        raise UserError(f"internal: the imported variables do not form the model of "
                        f"{tc.describe(arch)}")
    params = jax.tree_util.tree_map(jnp.asarray, tree["params"])
    tx = optim.build_optimizer(config, optim.learning_rate_schedule(config, 1, 1))
    state = TrainState(step=jnp.asarray(step, jnp.int32), params=params,
                       batch_stats=jax.tree_util.tree_map(jnp.asarray, tree["batch_stats"]),
                       opt_state=tx.init(params))
    epath.Path(workdir).mkdir(parents=True, exist_ok=True)
    ckpt = checkpointing.Writer(checkpointing.checkpoint_manager(workdir, keep=1))
    ckpt.save(step, state, config)
    ckpt.close()  # waits, and writes the step's manifest
    summary = {"checkpoint": prefix, "format": fmt, "ema": ema, "global_step": step,
               "architecture": dataclasses.asdict(arch), "variables": len(values),
               "step_dir": str(checkpointing.checkpoint_dir(workdir) / str(step)),
               # SimCLRv1's conv kernels are ~16.8x the norm of v2's (the official README's
               # known issues): momentum fine-tuning needs other hyperparameters for each.
               "mean_conv_kernel_norm": float(np.mean([
                   np.linalg.norm(v) for k, v in values.items()
                   if k.endswith("/kernel") and "conv2d" in k]))}
    if jax.process_index() == 0:
        (epath.Path(workdir) / "import.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary
