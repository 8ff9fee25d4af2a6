"""Preemption notices (SIGTERM): the training loop stops at a step every process agrees on.

Cloud TPU pods, spot VMs and SLURM preempt a job with SIGTERM and kill it a little later. The
loop asks `watcher(step)` after every step; when it says yes, the loop saves a checkpoint of
that step and returns, so the job exits 0 and rerunning the same command resumes from there.

- Multi-process (after jax.distributed.initialize): JAX's preemption sync manager already owns
  SIGTERM. A notice on any process reaches all of them, and
  `multihost_utils.reached_preemption_sync_point` (what Orbax's `reached_preemption` calls)
  is True on every process at the same step, so all of them take part in the same save.
- Single process: no sync manager runs, so a handler of our own records the notice instead of
  letting SIGTERM kill the job; `close()` puts the previous handler back.
"""

import signal
import threading

import jax
from absl import logging
from jax.experimental import multihost_utils


class PreemptionWatcher:
    """`watcher(step)` is True once training should save `step` and stop (call it every step,
    on every process, with the step just completed)."""

    def __init__(self):
        self._notice = threading.Event()
        self._previous = None
        # jax.distributed's sync manager installs its own SIGTERM handler: replacing it would
        # leave the other processes without the notice.
        self._multihost = (jax.distributed.is_initialized()
                           and jax.config.jax_enable_preemption_service)
        if self._multihost:
            return
        try:
            self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)
        except ValueError:  # not the main thread: only that one may install handlers
            logging.warning("Not in the main thread: SIGTERM will not save a checkpoint first.")

    def _on_sigterm(self, signum, frame) -> None:
        del signum, frame
        self._notice.set()

    def __call__(self, step: int) -> bool:
        if self._multihost:
            return multihost_utils.reached_preemption_sync_point(step)
        return self._notice.is_set()

    def close(self) -> None:
        """Restores the SIGTERM handler that was there before."""
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None
