"""Resuming a pretraining run: which checkpoint to start from, and which config changes a
resume accepts.

The rule for a changed config. Training is a function of (config, seed, step), so a resumed run
continues the same run only if every key that shapes it is unchanged. These keys may change:

    num_epochs, num_train_steps          extend (or shorten) the run; the learning-rate
                                         schedule is recomputed for the new length
    log_every_steps, checkpoint_every_steps, keep_checkpoints,
    stall_timeout_s                                                  bookkeeping
    knn_every_steps, knn_k, knn_temperature, eval_split              the kNN monitor only
    data_dir                             where the same data lives (another disk, a bucket)
    conv_impl                            another implementation of the same convolutions

Every other key (model, batch size, dataset, seed, augmentation, optimiser, ...) must be the
value the checkpoint was written with: otherwise the job stops before any work with one error
naming each changed key with its old and new value. Keys the checkpoint does not know (added to
the project after it was written) are not compared.

Which checkpoint: the newest finished step whose files match its manifest
(checkpointing.damage); a damaged one is named in the log, moved to
<workdir>/corrupt_checkpoints/<step> (kept, never deleted) and the next older one is tried.
"""

import json

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath
from jax.experimental import multihost_utils

from simclr_jax.core import checkpointing
from simclr_jax.errors import UserError

MAY_CHANGE = frozenset({
    "num_epochs", "num_train_steps", "log_every_steps", "checkpoint_every_steps",
    "keep_checkpoints", "stall_timeout_s", "knn_every_steps", "knn_k", "knn_temperature",
    "eval_split", "data_dir", "conv_impl"})
QUARANTINE = "corrupt_checkpoints"
# The value of each key that changes the network or the objective for a checkpoint whose saved
# config predates the key (what it was trained as); the current defaults are in config.py.
LEGACY = {
    "conv_padding": "same",  # Flax 'SAME' for strided convs
    "shortcut": "when_needed",  # identity shortcut where the shapes match
    "sk_ratio": 0.0,
    "se_ratio": 0.0,
    "loss_reduction": "mean",  # NT-Xent averaged over the 2N anchors
    "color_jitter_impl": "simclrv2",
}


def resume_config(config: ml_collections.ConfigDict, saved: dict | None
                  ) -> ml_collections.ConfigDict:
    """The config a run resumes with: `config`, but each LEGACY key (the network and the
    objective) as the checkpoint was trained: its saved value, or the legacy one if its saved
    config predates the key. A run continues as it started."""
    if saved is None:
        return config
    resumed = ml_collections.ConfigDict(config.to_dict())
    for key, legacy in LEGACY.items():
        value = saved.get(key, legacy)
        if resumed.get(key) != value:
            logging.warning("Resuming with config.%s=%r as the checkpoint was trained (the "
                            "config says %r)", key, value, resumed.get(key))
            resumed[key] = value
    return resumed


def _as_saved(config: ml_collections.ConfigDict) -> dict:
    """The config as a checkpoint stores it (JSON: tuples become lists)."""
    return json.loads(config.to_json_best_effort())


def config_changes(saved: dict, config: ml_collections.ConfigDict) -> list[str]:
    """'key: old -> new' for every key that differs and may not change on resume."""
    now = _as_saved(config)
    return [f"config.{key}: {saved[key]!r} -> {now[key]!r}" for key in sorted(now)
            if key in saved and key not in MAY_CHANGE and saved[key] != now[key]]


def check_config(saved: dict, config: ml_collections.ConfigDict, step: int,
                 workdir: str) -> None:
    """UserError naming each key whose change would make the resumed run another run."""
    if changes := config_changes(saved, config):
        raise UserError(
            f"this config differs from the one checkpoint step {step} in "
            f"{checkpointing.checkpoint_dir(workdir)} was written with, in keys a resumed run "
            f"may not change ({'; '.join(changes)}): set them back to continue this run, or "
            f"pass another --workdir to start a new one (keys that may change on resume: "
            f"{', '.join(sorted(MAY_CHANGE))})")


def read_saved_config(step_dir: epath.Path) -> dict | None:
    """The config item of a finished step (None if it has none)."""
    try:
        return dict(ocp.JsonCheckpointHandler().restore(step_dir / "config"))
    except (FileNotFoundError, ValueError):
        return None


def quarantine(workdir: str, step: int, why: str) -> epath.Path:
    """Moves a damaged step out of the checkpoints directory (process 0 only), so training
    can save that step again; the files are kept."""
    source = checkpointing.checkpoint_dir(workdir) / str(step)
    target_root = checkpointing.absolute(workdir) / QUARANTINE
    target_root.mkdir(parents=True, exist_ok=True)
    target, n = target_root / str(step), 0
    while target.exists():
        n += 1
        target = target_root / f"{step}-{n}"
    source.rename(target)
    logging.warning("Checkpoint step %d is unreadable (%s): moved to %s; falling back to the "
                    "newest older step.", step, why, target)
    return target


def _broadcast(value: int) -> int:
    if jax.process_count() == 1:
        return value
    return int(multihost_utils.broadcast_one_to_all(np.int64(value)))


def newest_intact_step(workdir: str) -> int | None:
    """The newest step whose files match its manifest (None: no checkpoint yet); damaged
    newer ones are quarantined. Process 0 decides, every process gets its answer. A UserError
    when checkpoints exist but every one of them is damaged."""
    chosen, damaged = -1, 0
    if jax.process_index() == 0:
        root = checkpointing.checkpoint_dir(workdir)
        for step in reversed(checkpointing.finished_steps(root)):
            if why := checkpointing.damage(root / str(step)):
                quarantine(workdir, step, why)
                damaged += 1
                continue
            chosen = step
            break
    chosen, damaged = _broadcast(chosen), _broadcast(damaged)
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("simclr_jax.resume.newest_intact_step")
    if chosen < 0 and damaged:
        raise no_readable_checkpoint(workdir)
    return None if chosen < 0 else chosen


def no_readable_checkpoint(workdir: str) -> UserError:
    where = checkpointing.absolute(workdir) / QUARANTINE
    return UserError(
        f"no checkpoint in {checkpointing.checkpoint_dir(workdir)} is readable: the damaged "
        f"ones were moved to {where} (see the warnings above). Rerun the same command to "
        f"start this run again from step 0, or restore the checkpoints from a backup")


def restore_newest(mngr: ocp.CheckpointManager, workdir: str, step: int, target
                   ) -> tuple[int, object]:
    """(step, state) restored from `step`, or from an older step when `step` fails to read
    (damage its manifest could not show: a step saved without one)."""
    while True:
        try:
            return step, checkpointing.restore(mngr, step, target)
        except checkpointing.UnreadableCheckpoint as e:
            if jax.process_index() == 0:
                quarantine(workdir, step, str(e))
            if jax.process_count() > 1:
                multihost_utils.sync_global_devices("simclr_jax.resume.restore_newest")
            mngr.reload()
            older = [s for s in mngr.all_steps() if s < step]
            if not older:
                raise no_readable_checkpoint(workdir) from None
            step = max(older)
