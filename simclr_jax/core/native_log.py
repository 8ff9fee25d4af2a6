"""The native side's stderr (C++ logs, check-failure aborts, faulthandler dumps) into a file.

When a multi-process job loses a worker, JAX's coordination agent ends the others from C++: a
check-failure line with a stack trace, then Python's `Fatal Python error: Aborted` and every
thread's stack, all on file descriptor 2. This module points fd 2 at a log file and gives
Python's own `sys.stderr` (the job's messages, absl's log lines, `error:` lines) a duplicate of
the original fd 2, so the terminal keeps what the job says and the file gets what the native
side dumps. The supervising parent (core/supervise.py) reads that file to explain the end.
"""

import faulthandler
import logging as pylogging
import os
import sys

from absl import logging


def divert_native_stderr(path: str) -> None:
    """fd 2 -> `path` (appended); Python's stderr and its log handlers stay on the old fd 2."""
    sys.stderr.flush()
    terminal = os.dup(2)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 2)
    os.close(fd)
    old = sys.stderr
    sys.stderr = open(terminal, "w", buffering=1, encoding=getattr(old, "encoding", "utf-8"),
                      errors="backslashreplace")
    # Handlers created earlier hold the old stream object, whose fd 2 is now the file.
    handlers = [logging.get_absl_handler().python_handler, *pylogging.getLogger().handlers]
    for handler in handlers:
        if isinstance(handler, pylogging.StreamHandler) and handler.stream is old:
            handler.setStream(sys.stderr)
    # faulthandler (which absl enables) writes to the fd it was given: the file from now on.
    faulthandler.enable(file=sys.__stderr__, all_threads=True)
