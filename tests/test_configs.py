"""Every shipped config (and each of its variants) loads and passes its job's validation, and
holds the paper's settings that the README promises."""

import importlib.util
from pathlib import Path

import pytest

from simclr_jax import config as pretrain_config
from simclr_jax import eval_config
from simclr_jax.errors import UserError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
PRETRAIN = {"default.py": [None], "cifar10.py": ["", "smoke"], "imagenet.py": ["", "local"]}
EVAL = {"linear_eval_cifar10.py": [None], "linear_eval_imagenet.py": [None],
        "finetune_imagenet.py": ["1pct", "10pct"], "finetune_cifar10.py": [None]}


def load(name: str, variant):
    spec = importlib.util.spec_from_file_location(name[:-3], CONFIGS / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config() if variant is None else module.get_config(variant)


def test_every_config_file_is_covered_here():
    shipped = {p.name for p in CONFIGS.glob("*.py")}
    assert shipped == set(PRETRAIN) | set(EVAL)


@pytest.mark.parametrize("name,variant", [(n, v) for n, vs in PRETRAIN.items() for v in vs])
def test_pretraining_configs_validate(name, variant):
    pretrain_config.validate(load(name, variant))


@pytest.mark.parametrize("name,variant", [(n, v) for n, vs in EVAL.items() for v in vs])
def test_eval_configs_validate(name, variant):
    c = load(name, variant)
    c.pretrained = "runs/x"
    eval_config.validate(c)


def test_paper_settings():
    c10 = load("cifar10.py", "")
    assert (c10.resnet_depth, c10.batch_size, c10.temperature, c10.color_jitter_strength,
            c10.blur_prob, c10.num_epochs) == (18, 512, 0.5, 0.5, 0.0, 1000)
    inet = load("imagenet.py", "")
    assert (inet.resnet_depth, inet.batch_size, inet.temperature, inet.learning_rate,
            inet.num_epochs) == (50, 4096, 0.1, 0.3, 100)
    lin = load("linear_eval_imagenet.py", None)
    assert (lin.optimizer, lin.learning_rate, lin.weight_decay, lin.num_epochs) == (
        "momentum", 0.1, 0.0, 90)
    ft1, ft10 = load("finetune_imagenet.py", "1pct"), load("finetune_imagenet.py", "10pct")
    assert (ft1.label_fraction, ft1.num_epochs, ft10.label_fraction, ft10.num_epochs) == (
        0.01, 60, 0.1, 30)
    with pytest.raises(ValueError, match="use one of"):
        load("finetune_imagenet.py", "5pct")


@pytest.mark.parametrize("job,key,value,message", [
    ("pretrain", "lars_trust_coefficient", 0.0, "must be > 0, got 0.0"),
    ("pretrain", "momentum", 1.0, "must be in [0, 1), got 1.0"),
    ("linear_eval", "resnet_depth", 19,
     "must be one of (18, 34, 50, 101, 152, 200) (or unset: the checkpoint's), got 19"),
    ("linear_eval", "momentum", 1.5, "must be in [0, 1), got 1.5"),
    ("finetune", "seed", -1, "must be >= 0, got -1"),
    ("knn", "width_multiplier", 0.0, "must be > 0 (or unset: the checkpoint's), got 0.0"),
])
def test_a_bad_value_names_its_key(job, key, value, message):
    """Caught by validate(), before any work (on main these ended in a traceback deep in the
    model or optimiser, or trained silently with a diverging momentum)."""
    if job == "pretrain":
        c, check = pretrain_config.get_config(), pretrain_config.validate
    else:
        c, check = eval_config.get_config(job), eval_config.validate
        c.pretrained = "runs/x"
    c[key] = value
    with pytest.raises(UserError) as error:
        check(c)
    assert str(error.value) == f"config.{key}: {message}"
