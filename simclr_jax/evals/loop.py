"""The training loop of linear evaluation and fine-tuning: logged, checkpointed, resumable.

The classifier's train state (parameters, BN statistics, optimiser state, step) is saved with
Orbax (core/checkpointing.py) every config.checkpoint_every_steps, at the last step, and when a
SIGTERM arrives (core/preemption.py: the job then saves that step and exits 0). Rerunning the
same command restores the newest saved step and reads the input from there (the input is a
pure function of the step), so it ends with exactly the classifier an uninterrupted run would
have; a kill -9 loses the steps since the last save. Each evaluated pretraining checkpoint has
its own state directory:

    <eval workdir>/train_state/pretrain_step_<step>/<phase>/checkpoints/<train step>/

Saved next to the state is the job's identity (the resolved eval config and the checkpoint
evaluated): a state saved by another config is not resumed from; it is discarded with a warning.
"""

import json
import os
import time
from collections.abc import Callable, Iterator

import jax
import ml_collections
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

from simclr_jax.core import checkpointing, parallel
from simclr_jax.core.preemption import PreemptionWatcher
from simclr_jax.evals import features

# Keys that do not change what is trained (how often to log or save).
NOT_IDENTITY = ("log_every_steps", "checkpoint_every_steps")


class Preempted(Exception):  # noqa: N818 (a notice, not a failure: the job exits 0)
    """Raised after the state of `step` was saved on a SIGTERM: the job stops, exit code 0."""

    def __init__(self, step: int, num_steps: int, directory: str):
        super().__init__(f"preempted (SIGTERM): saved step {step} of {num_steps} in "
                         f"{directory}; rerun the same command to resume")
        self.step, self.num_steps, self.directory = step, num_steps, directory


def state_dir(workdir: str, checkpoint_step: int, phase: str) -> str:
    """Where the train state of `phase` for one pretraining checkpoint is saved."""
    return os.path.join(workdir, "train_state", f"pretrain_step_{checkpoint_step}", phase)


def identity(config: ml_collections.ConfigDict, checkpoint: str, **extra) -> dict:
    """What a saved state must have been trained with to be resumed."""
    keys = {k: v for k, v in config.to_dict().items() if k not in NOT_IDENTITY}
    return json.loads(json.dumps({**keys, "checkpoint": checkpoint, **extra}))


def _saved_identity(mngr: ocp.CheckpointManager, step: int) -> dict | None:
    try:
        return ocp.JsonCheckpointHandler().restore(epath.Path(mngr.directory) / str(step)
                                                   / "config")
    except (FileNotFoundError, ValueError):
        return None


def restore_or_start(directory: str, state, wanted: dict):
    """(manager, state, start step): the newest saved state of `directory` if it was trained
    with `wanted`, else `state` at step 0 (a stale one is deleted with a warning)."""
    mngr = checkpointing.checkpoint_manager(directory, keep=1)
    latest = mngr.latest_step()
    if latest is not None and _saved_identity(mngr, latest) != wanted:
        saved = _saved_identity(mngr, latest) or {}
        diff = sorted(k for k in set(saved) | set(wanted) if saved.get(k) != wanted.get(k))
        logging.warning("The train state in %s was saved by another config or checkpoint "
                        "(differs in %s): starting over", directory, ", ".join(diff[:8]))
        mngr.close()
        if jax.process_index() == 0:
            checkpointing.checkpoint_dir(directory).rmtree()
        features.multihost_sync("simclr_jax.stale_train_state")
        mngr, latest = checkpointing.checkpoint_manager(directory, keep=1), None
    if latest is None:
        return mngr, state, 0
    logging.info("Resuming the classifier from step %d in %s", latest, directory)
    return mngr, checkpointing.restore(mngr, latest, state), int(latest)


def write_means(writer, step: int, history: list[dict], checkpoint_step: int, t0: float):
    """One metrics row: the mean of each metric since the last row, tagged with the checkpoint."""
    row = {k: sum(float(m[k]) for m in history) / len(history) for k in history[0]}
    row["checkpoint_step"] = checkpoint_step
    row["steps_per_sec"] = len(history) / max(time.time() - t0, 1e-9)
    writer.write_scalars(step, row)  # clu's default writer also logs it to the console


def train(state, step_fn: Callable, batches: Callable[[int], Iterator[dict]], num_steps: int,
          *, config: ml_collections.ConfigDict, checkpoint_step: int, writer,
          directory: str | None = None, wanted: dict | None = None):
    """Runs steps 1..num_steps of step_fn over batches(start_step) and returns the state.

    With `directory`, resumes from (and saves into) it as the module docstring says; a
    SIGTERM saves the step just finished and raises Preempted.
    """
    mngr, start = None, 0
    if directory is not None:
        mngr, state, start = restore_or_start(directory, state, wanted or {})
    if start >= num_steps:
        if mngr is not None:
            mngr.close()
        return state
    ckpt = checkpointing.Writer(mngr) if mngr is not None else None  # manifests, one-line errors
    every = config.checkpoint_every_steps
    preempted = PreemptionWatcher() if mngr is not None else None
    history, t0 = [], time.time()
    try:
        steps = parallel.compile_then_meet(step_fn, state, batches(start))
        for step, batch in zip(range(start + 1, num_steps + 1), steps, strict=False):
            state, metrics = parallel.settled(step_fn(state, batch))
            history.append(metrics)
            stop = preempted is not None and preempted(step)
            if step % config.log_every_steps == 0 or step == num_steps or stop:
                write_means(writer, step, jax.device_get(history), checkpoint_step, t0)
                history, t0 = [], time.time()
            if ckpt is not None and (stop or step == num_steps or (every and step % every == 0)):
                ckpt.save(step, state, ml_collections.ConfigDict(wanted))
            if stop:
                raise Preempted(step, num_steps, directory)
    except BaseException:
        if ckpt is not None:  # wait for the save in flight (a preemption's) and close Orbax now
            ckpt.close(quiet=True)
        raise
    finally:
        if preempted is not None:
            preempted.close()
    if ckpt is not None:
        ckpt.close()
    return state
