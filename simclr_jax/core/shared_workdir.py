"""Refuses a workdir the processes of a multi-process job do not all see.

On a pod slice or a multi-node job, `--workdir=runs/x` names a different local disk on every
host: Orbax would write each host's share of a checkpoint to its own disk (and wait on files it
never sees), and metrics would land on one host only. So before any work process 0 writes a
token unique to this start into the workdir and, after a barrier, every process reads it back.
"""

import os

import jax
import numpy as np
from etils import epath
from jax.experimental import multihost_utils

from simclr_jax.core import checkpointing
from simclr_jax.errors import UserError

PROBE_PREFIX = ".shared-workdir-check-"


def _start_token() -> str:
    """Random hex from process 0, the same on every process: names this start's probe file (a
    probe left by an earlier start, or by another job on a shared disk, never matches)."""
    local = np.frombuffer(os.urandom(16), np.uint32)
    return bytes(np.asarray(multihost_utils.broadcast_one_to_all(local))).hex()


def _reads_back(probe: epath.Path, token: str) -> bool:
    try:
        return probe.read_text() == token
    except OSError:  # FileNotFoundError, or a gs:// / network error from epath
        return False


def check_shared(workdir: str) -> None:
    """UserError on every process unless all processes see process 0's files in `workdir`.

    A no-op for a single process. Call after every process created `workdir`.
    """
    if jax.process_count() == 1:
        return
    token = _start_token()
    probe = checkpointing.absolute(workdir) / f"{PROBE_PREFIX}{token}"
    if jax.process_index() == 0:
        probe.write_text(token)
    multihost_utils.sync_global_devices("simclr_jax.shared_workdir.written")
    seen = multihost_utils.process_allgather(np.array(_reads_back(probe, token)))
    if jax.process_index() == 0:  # after the gather: every process has read it
        probe.unlink(missing_ok=True)
    if not np.all(seen):
        blind = [int(i) for i in np.flatnonzero(~np.asarray(seen, bool))]
        raise UserError(
            f"workdir {workdir} is not shared by the {jax.process_count()} processes: "
            f"processes {blind} do not see the file process 0 wrote there, so checkpoints "
            f"cannot be written. Pass a --workdir every host sees: gs://BUCKET/DIR on Cloud "
            f"TPU, or a directory on a shared filesystem (NFS, Lustre, GCS FUSE) on GPU "
            f"clusters")
