"""Stall watchdog: a run that makes no progress ends with an error instead of holding a pod.

A hung collective (a peer wedged in a step), a bucket read that never returns or a deadlock
leaves the training loop waiting forever while the machines stay booked. The loop tells the
watchdog which phase it is in (`watchdog.enter("input")`, "step", "checkpoint save", ...) every
time it moves on, and arms it once start-up (the pipeline's first reads, compiling the first
step: no fixed bound) is over; a daemon thread then checks every few seconds, and once one
phase has lasted `timeout_s` it
- writes every thread's Python stack (faulthandler) to `stack_file`,
- prints one `error:` line naming the phase, the step and that file,
- ends the process with RERUN_EXIT_CODE (75), skipping Python's shutdown (which would wait for
  the stuck thread), so the launcher can restart the job; the rerun resumes from the newest
  checkpoint (a save in flight is never taken for a finished one).

JAX and TensorFlow release the GIL while they wait (a device computation, a tf.data element),
which is what lets the watchdog thread run while the main thread is stuck.
"""

import faulthandler
import os
import sys
import threading
import time

from simclr_jax.errors import RERUN_EXIT_CODE

# What each phase waits for, for the error line.
_HINTS = {
    "input": "the host input pipeline returned no batch (a stalled read of the data: check "
             "config.dataset / config.data_dir and the storage it lives on)",
    "step": "a train step did not finish (a hung collective: check the other processes' logs)",
    "checkpoint save": "a checkpoint save did not finish (check the workdir's storage)",
}


class StallWatchdog:
    """Ends the process when one phase of the loop lasts `timeout_s` (0 turns it off)."""

    def __init__(self, timeout_s: float, stack_file: str, what: str = "config.stall_timeout_s"):
        self.timeout_s = float(timeout_s)
        self._stack_file = stack_file
        self._what = what
        self._phase, self._step, self._since = "start", 0, time.monotonic()
        self._armed = False
        self._stop = threading.Event()
        self._thread = None
        if self.timeout_s > 0:
            self._thread = threading.Thread(target=self._watch, name="stall-watchdog",
                                            daemon=True)
            self._thread.start()

    def enter(self, phase: str, step: int | None = None) -> None:
        """The loop moved on: it now waits in `phase` (at `step`, if given)."""
        if step is not None:
            self._step = step
        self._phase, self._since = phase, time.monotonic()

    def arm(self) -> None:
        """Start-up is over: from now on a phase that lasts timeout_s is a stall."""
        self._since, self._armed = time.monotonic(), True

    @property
    def phase(self) -> str:
        """The phase now: to return to it after a nested one."""
        return self._phase

    def close(self) -> None:
        """Stops watching (the loop has ended, however it ended)."""
        self._stop.set()

    def _poll_s(self) -> float:
        # A stall is reported at most 10% (and 5 s) after the timeout.
        return min(5.0, max(0.1, self.timeout_s / 10))

    def _watch(self) -> None:
        while not self._stop.wait(self._poll_s()):
            phase, step, since = self._phase, self._step, self._since
            if (self._armed and time.monotonic() - since >= self.timeout_s
                    and not self._stop.is_set()):
                self._report(phase, step)

    def _report(self, phase: str, step: int) -> None:
        where = self._dump_stacks()
        hint = _HINTS.get(phase, f"the phase '{phase}' did not finish")
        print(f"error: no progress for {self.timeout_s:g} s in phase '{phase}' at step "
              f"{step} ({self._what}): {hint}. {where}; the checkpoints are intact: rerun "
              f"the same command to resume (raise {self._what} if this phase legitimately "
              f"takes longer, 0 turns the watchdog off)", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(RERUN_EXIT_CODE)  # the main thread is stuck: a normal exit would wait for it

    def _dump_stacks(self) -> str:
        """Every thread's stack into the stack file; says where it went."""
        try:
            os.makedirs(os.path.dirname(self._stack_file) or ".", exist_ok=True)
            with open(self._stack_file, "a") as f:
                f.write(f"\n--- stall: no progress for {self.timeout_s:g} s in phase "
                        f"'{self._phase}' at step {self._step} (pid {os.getpid()}, "
                        f"{time.strftime('%Y-%m-%d %H:%M:%S')}) ---\n")
                f.flush()
                faulthandler.dump_traceback(file=f, all_threads=True)
            return f"Every thread's stack is in {self._stack_file}"
        except OSError as e:
            return f"(could not write the threads' stacks to {self._stack_file}: {e})"
