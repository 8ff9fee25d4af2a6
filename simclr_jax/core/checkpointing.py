"""Orbax checkpoints of the train state (and the config), saved asynchronously and verified.

Orbax writes each step into a temporary directory and renames it when complete, so a job killed
mid-save leaves no step directory that looks valid; stale temporaries are removed on start-up.
Orbax keeps no checksums of the array data (a flipped bit reads back as a wrong number, a
truncated file fails half-way through a restore), so once a save is complete process 0 writes
`<step>/simclr_manifest.json`: the size and CRC-32 of every file of the step. `damage(step_dir)`
compares a step with its manifest before anything restores it.
"""

import dataclasses
import functools
import json
import os
import zlib

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

from simclr_jax.core import supervise
from simclr_jax.errors import UserError

MANIFEST = "simclr_manifest.json"
_CHUNK = 1 << 20


class UnreadableCheckpoint(UserError):
    """A finished checkpoint step whose files are damaged (or unreadable for another reason)."""


def absolute(path: str) -> epath.Path:
    """`path` as Orbax needs it: absolute (a local relative path is taken from the cwd)."""
    return epath.Path(path if "://" in str(path) else os.path.abspath(path))


def checkpoint_dir(workdir: str) -> epath.Path:
    """Where a run keeps its checkpoints (works for local paths and gs:// buckets)."""
    return absolute(workdir) / "checkpoints"


def checkpoint_manager(workdir: str, keep: int = 3, read_only: bool = False
                       ) -> ocp.CheckpointManager:
    """Async manager keeping the `keep` newest steps, items 'state' and 'config'."""
    _no_replica_parallel_writes_on_cpu()
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=not read_only, cleanup_tmp_directories=not read_only,
        enable_async_checkpointing=True, read_only=read_only)
    return ocp.CheckpointManager(checkpoint_dir(workdir), options=options,
                                 item_names=("state", "config"))


@functools.cache  # Orbax's type-handler registry is process-wide: register once
def _no_replica_parallel_writes_on_cpu() -> None:
    """On CPU, Orbax's arrays are written whole by their first replica (as Orbax does on GPU).

    Orbax's default (replica-parallel) splits each replicated array into one slice per device,
    each written by its own replica: hosts share the writes on a TPU pod, but on CPU the devices
    are one host's, so it only adds a compiled slice program per array shape and device:
    measured ~6 s of each of the first saves of the tiny test model on 8 CPU devices (164 XLA
    compilations in a 4-step run with 2 saves, 12 without). The files hold the same arrays
    (restores do not depend on it). TPU and GPU keep Orbax's defaults.
    """
    if jax.default_backend() == "cpu":
        ocp.type_handlers.register_type_handler(
            jax.Array, ocp.type_handlers.ArrayHandler(use_replica_parallel=False),
            override=True)


def finished_steps(root: epath.Path) -> list[int]:
    """Finished (renamed) step directories under a checkpoints directory, ascending."""
    return sorted(ocp.path.step.checkpoint_steps(root)) if root.is_dir() else []


# ---- Manifests: what each step's files were when the save completed ---------------------------

def _files(step_dir: epath.Path) -> list[epath.Path]:
    """Every file under `step_dir` but the manifest (a walk: gs:// paths have no rglob)."""
    out = []
    for path in sorted(step_dir.iterdir()):
        if path.is_dir():
            out.extend(_files(path))
        elif path.name not in (MANIFEST, f"{MANIFEST}.tmp"):
            out.append(path)
    return out


def _crc32(path: epath.Path) -> int:
    crc = 0
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            crc = zlib.crc32(chunk, crc)
    return crc


def write_manifest(step_dir: epath.Path) -> None:
    """Records size and CRC-32 of every file of a finished step (written atomically)."""
    files = {str(p.relative_to(step_dir)): [p.stat().length, _crc32(p)]
             for p in _files(step_dir)}
    tmp = step_dir / f"{MANIFEST}.tmp"
    tmp.write_text(json.dumps({"files": files}, indent=0, sort_keys=True))
    tmp.rename(step_dir / MANIFEST)


def damage(step_dir: epath.Path) -> str:
    """'' if the step's files are as saved (or it has no manifest: written by an older version,
    or killed between the save and the manifest); else what differs."""
    manifest = step_dir / MANIFEST
    if not manifest.exists():
        return ""
    try:
        files = json.loads(manifest.read_text())["files"]
    except (ValueError, KeyError) as e:
        return f"its {MANIFEST} is unreadable ({e})"
    for name, (size, crc) in files.items():
        path = step_dir / name
        if not path.exists():
            return f"file {name} is missing"
        if (actual := path.stat().length) != size:
            return f"file {name} has {actual} bytes, {size} when it was saved"
        if _crc32(path) != crc:
            return f"file {name} does not match its checksum (its contents changed after the save)"
    return ""


# ---- Saving -----------------------------------------------------------------------------------

@dataclasses.dataclass
class Writer:
    """Saves steps asynchronously; a step's manifest is written once its save is complete
    (before the next save starts, and at `finish`). A failed save is a UserError naming the
    directory; the steps saved before it stay intact."""

    mngr: ocp.CheckpointManager
    pending: list[int] = dataclasses.field(default_factory=list)
    failed: bool = False  # a save failed (and was reported)

    @property
    def directory(self) -> epath.Path:
        return epath.Path(self.mngr.directory)

    def save(self, step: int, state, config: ml_collections.ConfigDict) -> None:
        """Starts an async save of `state` at `step` (all processes must call this)."""
        self.finish()
        try:
            self.mngr.save(step, args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                config=ocp.args.JsonSave(json.loads(config.to_json_best_effort()))), force=True)
        except Exception as e:  # noqa: BLE001  (any write failure: disk full, permissions)
            raise self._error(step, e) from None
        self.pending.append(step)

    def finish(self) -> None:
        """Waits for the save in flight; writes the manifests of the steps it completed."""
        if not self.pending:
            return
        try:
            self.mngr.wait_until_finished()
            if jax.process_index() == 0:
                for step in self.pending:
                    if (self.directory / str(step)).is_dir():
                        write_manifest(self.directory / str(step))
        except Exception as e:  # noqa: BLE001
            raise self._error(self.pending[-1], e) from None
        finally:
            self.pending = []

    def close(self, quiet: bool = False) -> None:
        """finish() and close the manager; `quiet` (another error is on its way) only logs a
        failed save instead of raising it."""
        try:
            self.finish()
        except UserError as e:
            if not quiet:
                raise
            logging.warning("%s", e)
        finally:
            try:
                self.mngr.close()
            except Exception as e:  # noqa: BLE001
                # Orbax raises a failed save's error once more from close(): reported already.
                if not (quiet or self.failed):
                    raise self._error(self.pending[-1] if self.pending else -1, e) from None
                logging.info("Orbax's manager closed with the failed save's error: %s", e)

    def _error(self, step: int, cause: Exception) -> Exception:
        """The UserError naming a failed save; a save that failed because another process of
        the job vanished raises `cause` as it is (core/supervise.py names the lost process)."""
        self.failed = True
        if supervise.peer_lost(cause):
            return cause
        kept = [s for s in finished_steps(self.directory) if s != step]
        previous = (f"the previous checkpoint (step {kept[-1]}) is intact" if kept
                    else "no earlier checkpoint exists")
        text = " ".join(str(cause).split())[:400]
        return UserError(
            f"could not write checkpoint step {step} to {self.directory} "
            f"({type(cause).__name__}: {text}); {previous}. Free disk space or fix the "
            f"permissions of {self.directory}, then rerun the same command to resume")


# ---- Restoring --------------------------------------------------------------------------------

def _flat(tree) -> dict[str, tuple]:
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {"/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))))
                     for k in path): tuple(leaf.shape) for path, leaf in leaves}


def _ordered(keys) -> list[str]:
    """Parameters before the rest: they are what a reader recognises first."""
    return sorted(keys, key=lambda k: (not k.startswith("params"), k))


def tree_diff(expected, stored, limit: int = 6) -> str:
    """'' when two trees of arrays (or shape structs / Orbax metadata) have the same keys and
    shapes; else which keys are missing / unexpected and which shapes differ."""
    want, have = _flat(expected), _flat(stored)
    parts = []

    def listed(items: list[str]) -> str:
        return ", ".join(items[:limit]) + (f" (+{len(items) - limit} more)"
                                           if len(items) > limit else "")

    if missing := _ordered(set(want) - set(have)):
        parts.append(f"missing in checkpoint: {listed(missing)}")
    if extra := _ordered(set(have) - set(want)):
        parts.append(f"only in checkpoint: {listed(extra)}")
    if shapes := [f"{k} {have[k]} vs expected {want[k]}" for k in _ordered(set(want) & set(have))
                  if want[k] != have[k]]:
        parts.append(f"shapes differ: {'; '.join(shapes[:limit])}"
                     + (f" (+{len(shapes) - limit} more)" if len(shapes) > limit else ""))
    return "; ".join(parts)


def read_state_metadata(step_dir: epath.Path):
    """The saved state's tree of array metadata (shapes, dtypes), without reading arrays."""
    try:
        return ocp.PyTreeCheckpointHandler().metadata(step_dir / "state").tree
    except (FileNotFoundError, ValueError, KeyError) as e:
        raise UnreadableCheckpoint(f"checkpoint {step_dir} has no readable state item: "
                                   f"{' '.join(str(e).split())[:300]}") from None


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
    shardings), so optax state keeps its types and arrays land on the current mesh.

    Shapes are compared with the saved metadata first: Orbax aborts a restore at the first
    array that does not fit and leaves the others' reads running on a closed event loop (a
    burst of 'Event loop is closed' tracebacks at exit), so a mismatch must not reach it.
    """
    step_dir = epath.Path(mngr.directory) / str(step)
    if diff := tree_diff(target, read_state_metadata(step_dir)):
        raise UserError(
            f"checkpoint step {step} in {mngr.directory} does not match this config's model "
            f"or optimiser (was it written with another resnet_depth, width_multiplier, head "
            f"or optimizer?): {diff}")
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, target)
    try:
        restored = mngr.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract)))
    except Exception as e:  # noqa: BLE001  (TensorStore's read errors come as many types)
        raise UnreadableCheckpoint(
            f"checkpoint step {step} in {mngr.directory} is unreadable: "
            f"{' '.join(str(e).split())[:300]}") from None
    return restored.state


def read_numpy(workdir: str, step: int | None = None) -> dict:
    """The train state saved at `step` (default: the newest) as nested dicts of numpy arrays,
    without building the model or a mesh: for inspecting and comparing runs."""
    steps = finished_steps(checkpoint_dir(workdir))
    step = (steps[-1] if steps else None) if step is None else step
    if step is None:
        raise UserError(f"no checkpoint in {checkpoint_dir(workdir)}")
    path = checkpoint_dir(workdir) / str(step) / "state"
    checkpointer = ocp.PyTreeCheckpointer()
    tree = checkpointer.metadata(path).item_metadata.tree
    as_numpy = jax.tree_util.tree_map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
    return checkpointer.restore(path, args=ocp.args.PyTreeRestore(restore_args=as_numpy))
