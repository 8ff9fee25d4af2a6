"""The console scripts in pyproject.toml point at callables that exist."""

import importlib
import sys
import tomllib
from pathlib import Path

import pytest

SCRIPTS = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
                        )["project"]["scripts"]


def test_every_job_has_a_console_script():
    assert {"simclr-pretrain", "simclr-linear-eval", "simclr-finetune", "simclr-knn",
            "simclr-sweep", "simclr-visualize", "simclr-plot"} <= set(SCRIPTS)


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_console_script_target_is_callable(name):
    module, _, attr = SCRIPTS[name].partition(":")
    assert callable(getattr(importlib.import_module(module), attr)), SCRIPTS[name]


@pytest.mark.parametrize("module,config,message", [
    # A typo in the path: on main a bare traceback from ml_collections, exit 1.
    ("pretrain", "configs/does_not_exist.py",
     "config file configs/does_not_exist.py (from {root}) does not exist "
     "(--config=configs/does_not_exist.py)"),
    # A config file's get_config() refusing its argument: its last line, not a traceback.
    ("finetune", "configs/finetune_imagenet.py:5pct",
     "config file configs/finetune_imagenet.py:5pct (--config), line 32: ValueError: "),
    # A file that is not Python: on main the SyntaxError's traceback, exit 1.
    ("pretrain", "{bad}/notes.md", "config file {bad}/notes.md, line 2: unterminated string"),
    ("knn", "{bad}/no_get_config.py", "config file {bad}/no_get_config.py defines no get_config()"),
    # get_config raising something else than ValueError: on main a traceback, exit 1.
    ("linear_eval", "{bad}/raises.py", "config file {bad}/raises.py (--config), line 3: "
                                       "KeyError: 'dataset'"),
])
def test_a_bad_config_file_is_one_error_line(tmp_path, run_job, error_lines, module, config,
                                             message):
    (tmp_path / "notes.md").write_text("# Notes\nThe run's loss fell.\n")
    (tmp_path / "no_get_config.py").write_text("import ml_collections\n\nCONFIG = {}\n")
    (tmp_path / "raises.py").write_text("def get_config():\n    c = {}\n    return c['dataset']\n")
    config = config.format(bad=tmp_path)
    message = message.replace("{bad}", str(tmp_path))
    pretrained = [] if module == "pretrain" else ["--config.pretrained=runs/x"]
    result = run_job(module, f"--config={config}", *pretrained, f"--workdir={tmp_path}")
    output = result.stdout + result.stderr
    assert result.returncode == 2 and "Traceback" not in output, output[-3000:]
    errors = error_lines(result)
    root = Path(__file__).resolve().parents[1]
    assert len(errors) == 1 and message.format(root=root) in errors[0], errors


def test_late_tensorstore_callbacks_of_an_aborted_operation_print_nothing(monkeypatch, capsys):
    """What Orbax does when part of a save fails: its coroutine raises and its loop closes with
    a TensorStore future still in flight; completing it calls call_soon_threadsafe on the
    closed loop, printed as a 'RuntimeError: Event loop is closed' traceback (once per file)."""
    import asyncio
    import time

    import tensorstore as ts

    from simclr_jax import cli

    def aborted_operation() -> str:
        promise, future = ts.Promise.new()

        async def wait():
            await future

        async def operation():
            asyncio.ensure_future(wait())
            await asyncio.sleep(0.01)
            raise OSError("No space left on device")

        loop = asyncio.new_event_loop()
        with pytest.raises(OSError):
            loop.run_until_complete(operation())
        loop.close()
        promise.set_result(1)  # the in-flight write completes after the loop closed
        time.sleep(0.2)
        return capsys.readouterr().err

    monkeypatch.setattr(sys, "unraisablehook", sys.__unraisablehook__)  # restored afterwards
    assert "RuntimeError: Event loop is closed" in aborted_operation()  # the symptom
    cli._ignore_callbacks_on_closed_loops()
    assert "Event loop is closed" not in aborted_operation()
