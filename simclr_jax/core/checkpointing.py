"""Orbax checkpoints of the train state (and the config), saved asynchronously.

Orbax writes each step into a temporary directory and renames it when complete, so a job killed
mid-save leaves no step directory that looks valid; stale temporaries are removed on start-up.
"""

import json
import os

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from simclr_jax.errors import UserError


def absolute(path: str) -> epath.Path:
    """`path` as Orbax needs it: absolute (a local relative path is taken from the cwd)."""
    return epath.Path(path if "://" in str(path) else os.path.abspath(path))


def checkpoint_dir(workdir: str) -> epath.Path:
    """Where a run keeps its checkpoints (works for local paths and gs:// buckets)."""
    return absolute(workdir) / "checkpoints"


def checkpoint_manager(workdir: str, keep: int = 3, read_only: bool = False
                       ) -> ocp.CheckpointManager:
    """Async manager keeping the `keep` newest steps, items 'state' and 'config'."""
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=not read_only, cleanup_tmp_directories=not read_only,
        enable_async_checkpointing=True, read_only=read_only)
    return ocp.CheckpointManager(checkpoint_dir(workdir), options=options,
                                 item_names=("state", "config"))


def save(mngr: ocp.CheckpointManager, step: int, state, config: ml_collections.ConfigDict
         ) -> None:
    """Starts an async save of `state` at `step` (all processes must call this)."""
    mngr.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        config=ocp.args.JsonSave(json.loads(config.to_json_best_effort()))), force=True)


def saved_config(workdir: str) -> dict | None:
    """The config saved with the newest finished checkpoint of `workdir` (None if none)."""
    root = checkpoint_dir(workdir)
    if not root.is_dir():
        return None
    steps = ocp.path.step.checkpoint_steps(root)
    if not steps:
        return None
    try:
        return dict(ocp.JsonCheckpointHandler().restore(root / str(max(steps)) / "config"))
    except (FileNotFoundError, ValueError):
        return None


def restore(mngr: ocp.CheckpointManager, step: int, target):
    """Restores the state saved at `step` into `target` (arrays or ShapeDtypeStructs with
    shardings), so optax state keeps its types and arrays land on the current mesh."""
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, target)
    try:
        restored = mngr.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract)))
    except (ValueError, KeyError) as e:
        raise UserError(
            f"checkpoint step {step} in {mngr.directory} does not match this config's model "
            f"or optimiser (was it written with another resnet_depth, width_multiplier, head "
            f"or optimizer?): {e}") from None
    return restored.state


def read_numpy(workdir: str, step: int | None = None) -> dict:
    """The train state saved at `step` (default: the newest) as nested dicts of numpy arrays,
    without building the model or a mesh: for inspecting and comparing runs."""
    mngr = checkpoint_manager(workdir, read_only=True)
    step = mngr.latest_step() if step is None else step
    mngr.close()
    if step is None:
        raise UserError(f"no checkpoint in {checkpoint_dir(workdir)}")
    path = checkpoint_dir(workdir) / str(step) / "state"
    checkpointer = ocp.PyTreeCheckpointer()
    tree = checkpointer.metadata(path).item_metadata.tree
    as_numpy = jax.tree_util.tree_map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
    return checkpointer.restore(path, args=ocp.args.PyTreeRestore(restore_args=as_numpy))
