"""A lost worker ends every other process of the job with one `error:` line, not a C++ abort.

A pod loses a host without any signal (hardware, the kernel's OOM killer, kill -9). JAX's
coordination service (on process 0) then notices that the host stopped sending heartbeats,
`heartbeat_timeout` seconds after its last one (the `--heartbeat_timeout` flag, passed to
`jax.distributed.initialize`), and every other process's coordination agent aborts its process
from C++ (JAX 0.10.2 offers a `missed_heartbeat_callback` for this, but calling it fails in its
binding with std::bad_cast, so nothing can run in Python). When process 0 itself is lost, the
others' agents abort at once: their next error poll finds the coordinator gone.

So a multi-process job runs as a small parent that starts the real job as its child (the same
command line) and waits for it:
- the child sends its native stderr to `$TMPDIR/simclr_jax-logs/<workdir>/native-process-<id>.log`
  (core/native_log.py, core/log_files.py); its own messages still reach the terminal;
- the parent forwards SIGTERM (a preemption notice) to the child; the child dies with the
  parent (PR_SET_PDEATHSIG), so killing the parent kills the worker;
- when the child dies of a signal, the parent reads the tail of that log and prints one line:
  which process was lost, and that every worker must be rerun (which resumes from the last
  checkpoint), then exits with RERUN_EXIT_CODE.
The bound: a surviving process stops within heartbeat_timeout (plus the service's check
period, about a second) of the lost one's last heartbeat, at once if the lost one is process 0.
"""

import ctypes
import os
import re
import signal
import subprocess
import sys
import time
import traceback

from simclr_jax.errors import RERUN_EXIT_CODE

# Set in the child's environment: where its native stderr goes (and that it is the child).
LOG_ENV = "SIMCLR_JAX_NATIVE_LOG"
_PARENT_ENV = "SIMCLR_JAX_SUPERVISOR_PID"
_PR_SET_PDEATHSIG = 1
_TAIL_BYTES = 1 << 16
# How JAX reports a peer that vanished: a gloo collective (CPU/GPU) at once, a barrier of the
# coordination service (Orbax's saves, multihost_utils) once its heartbeats are missed.
_PEER_GONE = re.compile(r"Gloo|closed by peer|heartbeat timeout|Barrier failed|"
                        r"CoordinationService")


def is_child() -> bool:
    """True in the supervised child of a multi-process job."""
    return LOG_ENV in os.environ


def child_log() -> str:
    """The child's native log file (set by the parent)."""
    return os.environ[LOG_ENV]


def die_with_parent() -> None:
    """The child ends (SIGKILL) when the supervising parent ends however it ends: a killed
    worker is a killed job, not an orphan still holding its devices."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the orphan runs on
        return
    if str(os.getppid()) != os.environ.get(_PARENT_ENV):  # the parent died before prctl
        os._exit(RERUN_EXIT_CODE)


def peer_lost(error: BaseException) -> bool:
    """True if `error` is how JAX reports a vanished process of this job (not a fault of the
    storage or the job itself)."""
    return bool(_PEER_GONE.search(str(error)))


def await_verdict(error: BaseException, heartbeat_timeout_s: int) -> None:
    """In the child, after `error` ended the job: if it looks like a peer vanished mid-collective
    (gloo notices at once, before the coordination service does), write the traceback to the
    native log and wait for JAX to abort this process (which the parent then explains). Returns
    after heartbeat_timeout_s + 30 s if no abort came: the error is then the job's own."""
    if not is_child() or not peer_lost(error):
        return
    traceback.print_exception(error, file=sys.__stderr__)
    sys.__stderr__.flush()
    time.sleep(heartbeat_timeout_s + 30)


def run_child(log_path: str, process: str, heartbeat_timeout_s: int) -> int:
    """Runs this command again as a child with its native stderr in `log_path`; returns the
    exit code for this (parent) process, after one `error:` line if the child died of a
    signal. `process` names this process in that line ('process 1')."""
    env = dict(os.environ, **{LOG_ENV: log_path, _PARENT_ENV: str(os.getpid())})
    child = subprocess.Popen([sys.executable, *sys.orig_argv[1:]], env=env)

    def forward(signum, frame) -> None:
        del frame
        if child.poll() is None:
            child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    # Ctrl-C reaches the child from the terminal itself; the parent waits for its outcome.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    code = child.wait()
    if code >= 0:
        return code
    print(f"error: {explain(-code, log_path, process, heartbeat_timeout_s)}", file=sys.stderr,
          flush=True)
    return RERUN_EXIT_CODE


def _tail(path: str) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.path.getsize(path) - _TAIL_BYTES))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def lost_processes(log: str) -> list[int]:
    """The process ids JAX's coordination service reported dead in `log` (last report)."""
    reports = re.findall(r"stopped sending heartbeats\):\s*(.*?)(?:The tasks have crashed|$)",
                         log, flags=re.S)
    if reports:
        text = reports[-1]
        ids = re.findall(r"task:(\d+)", text) or re.findall(r"^\s*(\d+)\s*$", text, flags=re.M)
        if ids:
            return sorted({int(i) for i in ids})
    return sorted({int(i) for i in re.findall(r"Task (\d+) heartbeat timeout", log)})


def coordinator_lost(log: str) -> bool:
    """True if the log shows this process's agent losing the coordination service itself."""
    return bool(re.search(r"PollForError.*?(Socket closed|failed to connect|Connection refused|"
                          r"UNAVAILABLE)", log, flags=re.S))


def explain(signum: int, log_path: str, process: str, heartbeat_timeout_s: int) -> str:
    """The `error:` message for a child that died of signal `signum`."""
    log = _tail(log_path)
    rerun = ("rerun every worker with the same command (all processes: a job cannot go on "
             "without one) to resume from the last checkpoint")
    lost = lost_processes(log)
    if lost:
        names = ", ".join(str(i) for i in lost)
        return (f"lost worker: process {names} stopped sending heartbeats for "
                f"{heartbeat_timeout_s} s (--heartbeat_timeout), so {process} stopped too; "
                f"check why it ended (its log; the host's OOM killer or preemption), then "
                f"{rerun}. Native log: {log_path}")
    if coordinator_lost(log):
        return (f"lost worker: process 0 (the coordinator) is gone, so {process} stopped "
                f"too; check why it ended (its log; the host's OOM killer or preemption), "
                f"then {rerun}. Native log: {log_path}")
    try:
        name = signal.Signals(signum).name
    except ValueError:
        name = str(signum)
    return (f"{process} ended by signal {name} (details in its native log {log_path}); "
            f"{rerun}")
