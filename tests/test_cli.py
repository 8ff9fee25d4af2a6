"""The console scripts in pyproject.toml point at callables that exist."""

import importlib
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
