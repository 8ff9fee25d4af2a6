"""One job per workdir: a second launch on a workdir in use stops with a clear error instead of
interleaving checkpoints and metrics.

Process 0 holds an exclusive `flock` on `<workdir>/run.lock` for the job's lifetime and writes
its pid, host, start time and command into the file (for the message a second job prints).
The kernel drops the lock when the process ends however it ends (kill -9 included), so a killed
run never blocks its rerun; the file itself stays. In a multi-process job only process 0 takes
the lock and every process learns the outcome, so all of them stop together. Workdirs on object
stores (gs://) have no flock: they are not locked (a log line says so).
"""

import contextlib
import datetime
import fcntl
import json
import os
import socket
import sys
from collections.abc import Iterator

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from simclr_jax.errors import UserError

LOCK_FILE = "run.lock"


def _holder(path: str) -> str:
    try:
        with open(path) as f:
            info = json.load(f)
        return (f"pid {info['pid']} on host {info['host']}, started {info['started']}: "
                f"{info['command']}")
    except (OSError, ValueError, KeyError):
        return "its holder is unknown"


def _acquire(workdir: str) -> tuple[int | None, str]:
    """(file descriptor holding the lock, '') or (None, why not)."""
    path = os.path.join(workdir, LOCK_FILE)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None, (
            f"workdir {workdir} is in use by another job ({_holder(path)}); wait for it to "
            f"finish or stop it, or pass another --workdir. ({path} stays locked only while "
            f"that job is alive)")
    info = {"pid": os.getpid(), "host": socket.gethostname(),
            "started": datetime.datetime.now().isoformat(timespec="seconds"),
            "command": " ".join(sys.argv)}
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
    return fd, ""


@contextlib.contextmanager
def locked(workdir: str) -> Iterator[None]:
    """Holds the workdir's lock (process 0) while the block runs; UserError if another job
    holds it. `workdir` must exist."""
    fd, error = None, ""
    if jax.process_index() == 0:
        if "://" in workdir:
            logging.info("Workdir %s is on an object store: not locked against a second job.",
                         workdir)
        else:
            fd, error = _acquire(workdir)
    failed = bool(error)
    if jax.process_count() > 1:
        failed = bool(multihost_utils.broadcast_one_to_all(np.int32(failed)))
    if failed:
        raise UserError(error or f"workdir {workdir} is in use by another job (process 0 "
                        f"could not lock {os.path.join(workdir, LOCK_FILE)}; see its error)")
    try:
        yield
    finally:
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
