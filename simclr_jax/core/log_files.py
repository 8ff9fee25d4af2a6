"""Where a job writes its diagnostics (native logs, thread stacks): a local directory.

faulthandler and the C++ side write to file descriptors, which need a local file, so a workdir
on an object store (gs://) gets its diagnostics in the local temporary directory instead, under
a name derived from the workdir; so do the native logs of every workdir (opened at start-up).
"""

import os
import re
import tempfile


def local_log_dir(workdir: str) -> str:
    """`<workdir>/logs` for a local workdir; `$TMPDIR/simclr_jax-logs/<bucket_path>` for an
    object-store one."""
    if "://" not in workdir:
        return os.path.join(os.path.abspath(workdir), "logs")
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", workdir.split("://", 1)[1]).strip("_")
    return os.path.join(tempfile.gettempdir(), "simclr_jax-logs", name)


def native_log_path(workdir: str, name: str) -> str:
    """Where a worker's native stderr goes: opened before the job runs, so it stays out of the
    workdir (which must hold nothing before the job checks it, core/shared_workdir.py): the
    local temporary directory, under a name derived from the absolute workdir."""
    where = workdir if "://" in workdir else os.path.abspath(workdir)
    flat = re.sub(r"[^A-Za-z0-9._-]+", "_", where.split("://", 1)[-1]).strip("_")
    directory = os.path.join(tempfile.gettempdir(), "simclr_jax-logs", flat)
    os.makedirs(directory, exist_ok=True)
    return os.path.join(directory, name)


def log_path(workdir: str, name: str) -> str:
    """The path of diagnostics file `name` of `workdir` (its directory is created)."""
    directory = local_log_dir(workdir)
    os.makedirs(directory, exist_ok=True)
    return os.path.join(directory, name)
