"""What every job's command line shares: flag parsing with clear errors, quiet library logs,
multi-process start-up, and the entry point of the evaluation jobs."""

import importlib.machinery
import logging as pylogging
import os
import re
import socket
import sys
import traceback
import types
from collections.abc import Callable, Sequence
from typing import NoReturn

from absl import app, flags, logging
from ml_collections import config_flags

from simclr_jax import cpu, eval_config
from simclr_jax.core import (
    accelerator,
    compile_cache,
    log_files,
    native_log,
    parallel,
    supervise,
)
from simclr_jax.errors import UserError, report_user_errors

FLAGS = flags.FLAGS
# Library INFO logs (Orbax's per-save chatter, XLA's TPU probe) drown the job's own progress.
_KEEP_INFO_FROM = ("simclr_jax", "/clu/")


class _QuietLibraries(pylogging.Filter):
    def filter(self, record: pylogging.LogRecord) -> bool:
        ours = any(part in record.pathname for part in _KEEP_INFO_FROM)
        if not ours and record.exc_info:
            # A library's traceback (Orbax logs one for every failed background save, asyncio
            # for every abandoned task) repeats an error this job reports in its own `error:`
            # line: keep the record's first line and the exception's message only.
            error = record.exc_info[1]
            record.msg = f"{record.getMessage()} ({type(error).__name__}: {error})"
            record.args, record.exc_info, record.exc_text = None, None, None
        return record.levelno >= pylogging.WARNING or ours


def _ignore_callbacks_on_closed_loops() -> None:
    """Late TensorStore callbacks of an aborted Orbax operation become one log line.

    When one part of an Orbax save or restore fails (a full disk, a damaged file), Orbax's
    coroutine raises and closes its private asyncio loop while TensorStore still has that
    operation's other reads / writes in flight. Each of them, on completing, calls
    loop.call_soon_threadsafe on the closed loop from a TensorStore thread, and the
    RuntimeError goes to sys.unraisablehook: a dozen 'RuntimeError: Event loop is closed'
    tracebacks around the job's own error line. Nothing is lost (the operation already
    failed and is reported), so they are dropped; any other unraisable error is printed as
    before.
    """
    previous = sys.unraisablehook
    seen = []

    def hook(unraisable) -> None:
        error = unraisable.exc_value
        if isinstance(error, RuntimeError) and str(error) == "Event loop is closed":
            if not seen:
                seen.append(True)
                logging.info("Ignoring I/O callbacks of an aborted Orbax operation that "
                             "arrived after its event loop closed.")
            return
        previous(unraisable)

    sys.unraisablehook = hook


def quiet_library_logs() -> None:
    """Keeps INFO lines of this project and clu's metric writers; warnings from all, without
    library tracebacks (nor TensorStore's late callbacks of a failed Orbax operation)."""
    _ignore_callbacks_on_closed_loops()
    handler = logging.get_absl_handler()
    handler.addFilter(_QuietLibraries())
    # Libraries that log through Python's root logger before absl's handler is attached
    # (asyncio's "Task exception was never retrieved") go through the same filter.
    for other in pylogging.getLogger().handlers:
        if other is not handler:
            other.addFilter(_QuietLibraries())


def _fail(message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(2)


def _unknown_key_message(error: Exception, argv: Sequence[str]) -> str:
    text = str(error).replace("\\'", "'")
    bad = m.group(1) if (m := re.search(r"'([\w.]+)'", text)) else text
    keys = [m.group(1) for a in argv if (m := re.match(r"--config\.([\w.]+)", a))]
    key = next((k for k in keys if k.split(".")[-1] == bad), bad)
    hint = (f"did you mean config.{m.group(1)}?" if (m := re.search(r'Did you mean "(\w+)"', text))
            else "the keys are those of the config file, listed in simclr_jax/config.py")
    return f"unknown config key config.{key} (--config.{key}=...): {hint}"


def define_config_flag(default_path: str, help_text: str) -> None:
    """config_flags.DEFINE_config_file; overrides naming no key become one clear error.

    ml_collections applies `--config.key=value` overrides when the flag is defined (reading
    sys.argv), so an unknown key fails here, before absl's parser runs.
    """
    _check_config_file(sys.argv)
    try:
        config_flags.DEFINE_config_file("config", default_path, help_text, lock_config=True)
    except (AttributeError, KeyError) as e:
        _fail(_unknown_key_message(e, sys.argv))


def _check_config_file(argv: Sequence[str]) -> None:
    """A --config file that does not parse, lacks get_config() or raises in it: one error line
    naming the file and line (ml_collections would print the traceback, or a misleading
    unknown-key error). A missing file is left to _check_config_loaded."""
    spec = _config_path(argv)
    path, _, arg = spec.partition(":")
    if spec == "?" or not os.path.isfile(path):
        return
    try:
        loader = importlib.machinery.SourceFileLoader("_simclr_config_check", path)
        module = types.ModuleType(loader.name)
        module.__file__ = path
        loader.exec_module(module)
    except SyntaxError as e:
        _fail(f"config file {path}, line {e.lineno}: {e.msg} (--config={spec}): fix the file "
              f"or pass another one")
    except Exception as e:  # noqa: BLE001 - anything the file's top level raises
        _fail(f"config file {path}, {_where(e, path)}: {type(e).__name__}: {e} "
              f"(--config={spec})")
    if not callable(getattr(module, "get_config", None)):
        _fail(f"config file {path} defines no get_config() (--config={spec}): a config file "
              f"is a Python file whose get_config() returns an ml_collections.ConfigDict")
    try:
        module.get_config(arg) if arg else module.get_config()
    except Exception as e:  # noqa: BLE001 - the file's own error, reported as one line
        _fail(f"config file {spec} (--config), {_where(e, path)}: {type(e).__name__}: "
              f"{str(e).strip().splitlines()[-1] if str(e).strip() else ''}".rstrip(": "))


def _where(error: BaseException, path: str) -> str:
    """'line N' of the innermost frame of `error` in the file `path`."""
    frames = [f for f in traceback.extract_tb(error.__traceback__)
              if os.path.abspath(f.filename) == os.path.abspath(path)]
    return f"line {frames[-1].lineno}" if frames else "at import"


def _config_path(argv: Sequence[str]) -> str:
    for i, arg in enumerate(argv):
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
        if arg == "--config" and i + 1 < len(argv):
            return argv[i + 1]
    return "?"


def _check_config_loaded(argv: Sequence[str]) -> None:
    """ml_collections defers a config file that failed to load until its first use (then an
    OSError traceback): make it one error now."""
    if "config" not in FLAGS:
        return
    try:
        getattr(FLAGS.config, "keys", None)  # any attribute access raises the load error
    except OSError:
        _fail(_missing_config_message(argv))


def _missing_config_message(argv: Sequence[str]) -> str:
    path = _config_path(argv)
    file = path.split(":", 1)[0]
    where = f"{file} (from {os.getcwd()})" if not os.path.isabs(file) else file
    return (f"config file {where} does not exist (--config={path}): pass the path of a "
            f"config file, e.g. --config=configs/cifar10.py (the files are listed in "
            f"configs/), or leave --config out for the embedded default")


def _config_file_error(error: Exception, argv: Sequence[str]) -> str:
    """A config file's get_config() raising ValueError / TypeError: its last line."""
    last = [line for line in str(error).splitlines() if line.strip()][-1]
    return f"config file {_config_path(argv)} (--config): {last.strip()}"


def parse_flags(argv: Sequence[str]) -> list[str]:
    """absl flag parsing where a bad flag or config key is one `error:` line and exit 2."""
    try:
        rest = FLAGS(argv)
    except flags.Error as e:
        if "Error whilst parsing config file" in str(e):
            _fail(_config_file_error(e, argv))
        _fail(str(e))
    except (AttributeError, KeyError) as e:
        _fail(_unknown_key_message(e, argv))
    except (ValueError, TypeError) as e:
        if "Error whilst parsing config file" in str(e):
            _fail(_config_file_error(e, argv))
        _fail(f"bad config override: {e}")
    except OSError as e:  # an override applied to a config file that failed to load
        if "config file" not in str(e):
            raise
        _fail(_missing_config_message(argv))
    _check_config_loaded(argv)
    return rest


def define_distributed_flags() -> None:
    """Multi-process flags; on Cloud TPU pods, SLURM and Open MPI none of them is needed."""
    flags.DEFINE_string("coordinator_address", None, "Multi-process: host:port of process 0.")
    flags.DEFINE_integer("num_processes", None, "Multi-process: number of processes.")
    flags.DEFINE_integer("process_id", None, "Multi-process: this process's id.")
    flags.DEFINE_integer("distributed_timeout", 300,
                         "Multi-process: seconds to wait for all processes to reach the "
                         "coordinator before failing with an error.", lower_bound=1)
    flags.DEFINE_integer("heartbeat_timeout", 100,
                         "Multi-process: a process silent this many seconds counts as lost "
                         "and the others stop with an error (JAX's heartbeat timeout).",
                         lower_bound=1)


def define_compilation_cache_flag() -> None:
    """--compilation_cache_dir: where JAX keeps compiled programs across restarts."""
    flags.DEFINE_string(
        "compilation_cache_dir", "",
        "JAX's persistent compilation cache, so a restart does not compile again (gs:// "
        "works). Default: $JAX_COMPILATION_CACHE_DIR if set, else <workdir>/"
        f"{compile_cache.DIR_NAME}; '{compile_cache.OFF}' turns it off.")


def start_job_backend() -> None:
    """After jax.distributed.initialize: the backend the launcher required (else one `error:`
    line), a log line naming it, and the persistent compilation cache (before any compile)."""
    accelerator.check_required()
    logging.info(accelerator.describe())
    if "compilation_cache_dir" in FLAGS:
        where = compile_cache.enable(FLAGS.compilation_cache_dir, FLAGS.workdir)
        logging.info("Persistent compilation cache: %s", where or "off")


def initialize_distributed_from_flags() -> None:
    """jax.distributed.initialize from the flags of define_distributed_flags (if multi-process).

    Call it before anything builds a jnp array: that starts the XLA backend, and
    jax.distributed.initialize must come first (importing simclr_jax builds none).
    """
    parallel.initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes,
                                    FLAGS.process_id, FLAGS.distributed_timeout,
                                    FLAGS.heartbeat_timeout)


def _supervise_multi_process() -> None:
    """Multi-process: the parent runs the job as its child and explains a native death (core/
    supervise.py), never returning; the child diverts its native stderr to the log file."""
    parallel.check_process_flags(FLAGS.coordinator_address, FLAGS.num_processes,
                                 FLAGS.process_id)  # before a child is started for nothing
    if not parallel.multi_process(FLAGS.coordinator_address, FLAGS.num_processes):
        return
    if supervise.is_child():
        native_log.divert_native_stderr(supervise.child_log())
        supervise.die_with_parent()
        return
    name = (f"process-{FLAGS.process_id}" if FLAGS.process_id is not None
            else f"host-{socket.gethostname()}-{os.getpid()}")  # hosts may run several
    workdir = FLAGS.workdir if "workdir" in FLAGS else "."
    log = log_files.native_log_path(workdir, f"native-{name}.log")
    process = name.replace("-", " ") if FLAGS.process_id is not None else "this process"
    raise SystemExit(supervise.run_child(log, process, FLAGS.heartbeat_timeout))


def define_eval_flags(job: str) -> None:
    """The flags every eval job takes (defined when the job runs, not at import: several job
    modules may be imported into one process)."""
    define_config_flag(f"{os.path.abspath(eval_config.__file__)}:{job}",
                       "Config file (configs/linear_eval_*.py, configs/finetune_*.py); "
                       "without it, the embedded default for the digits dataset.")
    flags.DEFINE_string("workdir", f"runs/{job}", "results.json, metrics.jsonl, TensorBoard.")
    flags.DEFINE_bool("wait", False, "Evaluate each new checkpoint of config.pretrained as it "
                      "appears; stop after the pretraining run's final step.")
    flags.DEFINE_float("wait_timeout", 3600.0, "--wait: give up after this many seconds "
                       "without a new checkpoint.")
    define_distributed_flags()
    define_compilation_cache_flag()


def run_command(body: Callable[[], None], *, distributed: bool = False) -> None:
    """Runs a command whose flags are defined: parses them (a bad flag or config key is one
    `error:` line), quiets library logs, starts multi-process JAX when `distributed`, sets
    up the CPU backend's process (step memory reuse; with several simulated CPU devices,
    all-reduces in one order: simclr_jax/cpu); for a `distributed` job also checks and names
    the backend and turns the compilation cache on (start_job_backend); then `body()`. A
    UserError anywhere is one `error:` line and exit code 2."""

    @report_user_errors
    def main(argv: list[str]) -> None:
        if len(argv) > 1:
            raise UserError(f"unexpected arguments: {argv[1:]}")
        quiet_library_logs()
        if distributed:
            _supervise_multi_process()
        prepared = cpu.prepare_process()  # before the backend starts
        if distributed:
            initialize_distributed_from_flags()
        cpu.finish_process_setup(prepared)
        if distributed:
            start_job_backend()
        try:
            body()
        except UserError:
            raise
        except Exception as e:
            if distributed:  # a peer lost mid-collective: JAX's verdict names it
                supervise.await_verdict(e, FLAGS.heartbeat_timeout)
            raise

    app.run(main, flags_parser=parse_flags)


def run_eval_job(job: str, run: Callable[..., dict]) -> None:
    """Console entry of an eval job: its flags, then `run(config, workdir, wait=,
    wait_timeout_s=)` after jax.distributed.initialize."""
    define_eval_flags(job)
    run_command(lambda: run(FLAGS.config, FLAGS.workdir, wait=FLAGS.wait,
                            wait_timeout_s=FLAGS.wait_timeout), distributed=True)
