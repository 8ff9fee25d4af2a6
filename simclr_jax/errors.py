"""The one exception type for bad user input, and the CLI wrapper that reports it."""

import sys
from collections.abc import Callable


class UserError(Exception):
    """Bad input (config, data, workdir): the message names the problem and the fix."""


def require(ok: bool, key: str, message: str) -> None:
    """UserError 'config.KEY: MESSAGE' unless `ok` (config validation)."""
    if not ok:
        raise UserError(f"config.{key}: {message}")


def report_user_errors(main: Callable[..., None]) -> Callable[..., None]:
    """Wraps an absl main so a UserError ends the job with one clear line and exit code 2."""

    def wrapped(*args, **kwargs):
        try:
            main(*args, **kwargs)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr, flush=True)
            # os._exit would skip Orbax's async writer cleanup; SystemExit lets it finish.
            raise SystemExit(2) from None

    return wrapped


# Exit code of a job that stopped for a reason a rerun can fix (a stalled phase, a lost worker):
# EX_TEMPFAIL of sysexits.h, so launchers can restart on it; the rerun resumes.
RERUN_EXIT_CODE = 75
