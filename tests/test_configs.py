"""Every shipped config (and each of its variants) loads and passes its job's validation, and
holds the paper's settings that the README promises."""

import importlib.util
from pathlib import Path

import pytest

from simclr_jax import config as pretrain_config
from simclr_jax import eval_config, transfer_config
from simclr_jax.core import optim
from simclr_jax.errors import UserError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
PRETRAIN = {"default.py": [None], "cifar10.py": ["", "smoke"], "imagenet.py": ["", "local"],
            "imagenet_v2.py": ["", "local"]}
EVAL = {"linear_eval_cifar10.py": [None], "linear_eval_imagenet.py": [None],
        "finetune_imagenet.py": ["1pct", "10pct", "v2_1pct", "v2_10pct"],
        "finetune_cifar10.py": [None]}
TRANSFER = {"transfer.py": [None]}


def load(name: str, variant):
    spec = importlib.util.spec_from_file_location(name[:-3], CONFIGS / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config() if variant is None else module.get_config(variant)


def test_every_config_file_is_covered_here():
    shipped = {p.name for p in CONFIGS.glob("*.py")}
    assert shipped == set(PRETRAIN) | set(EVAL) | set(TRANSFER)


def test_transfer_config_is_the_papers_protocol():
    """Appendix B.8: 45 strengths in [1e-6, 1e5]; 20,000 fine-tune steps of 256; 7 lrs in
    [1e-4, 0.1] x 7 decays in [1e-6, 1e-3] and 0; the paper's datasets, both protocols."""
    c = load("transfer.py", None)
    c.pretrained = "runs/x"
    transfer_config.validate(c)
    assert (c.datasets, c.protocol) == ("paper", "both")
    assert (c.linear_num_lambdas, c.linear_lambda_min, c.linear_lambda_max) == (45, 1e-6, 1e5)
    assert (c.finetune_steps, c.finetune_batch_size) == (20000, 256)
    assert len(c.finetune_learning_rates) == 7 and len(c.finetune_weight_decays) == 8
    assert c.finetune_learning_rates[0] == pytest.approx(1e-4)
    assert c.finetune_learning_rates[-1] == pytest.approx(0.1)
    assert c.finetune_weight_decays[-2] == pytest.approx(1e-3) and c.finetune_weight_decays[-1] == 0


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
    # The official README's CIFAR-10 command (run.py defaults for the rest).
    assert (c10.resnet_depth, c10.batch_size, c10.temperature, c10.color_jitter_strength,
            c10.blur_prob, c10.num_epochs, c10.weight_decay, c10.learning_rate, c10.lr_scaling,
            c10.optimizer, c10.warmup_epochs, c10.num_proj_layers, c10.proj_out_dim) == (
        18, 512, 0.5, 0.5, 0.0, 1000, 1e-4, 1.0, "linear", "lars", 10.0, 3, 128)
    assert optim.scaled_learning_rate(c10) == 2.0
    inet = load("imagenet.py", "")  # the v1 paper's recipe
    assert (inet.resnet_depth, inet.batch_size, inet.temperature, inet.learning_rate,
            inet.lr_scaling, inet.weight_decay, inet.num_epochs, inet.num_proj_layers,
            inet.color_jitter_impl) == (50, 4096, 0.1, 0.3, "linear", 1e-6, 100, 2, "simclrv1")
    v2 = load("imagenet_v2.py", "")  # the official README's ImageNet command
    assert (v2.resnet_depth, v2.batch_size, v2.temperature, v2.learning_rate, v2.lr_scaling,
            v2.weight_decay, v2.num_epochs, v2.num_proj_layers, v2.color_jitter_impl,
            v2.blur_prob, v2.warmup_epochs) == (50, 4096, 0.1, 0.075, "sqrt", 1e-4, 100, 3,
                                                "simclrv2", 0.5, 10.0)
    assert optim.scaled_learning_rate(v2) == pytest.approx(4.8) == optim.scaled_learning_rate(
        inet)
    for c in (c10, inet, v2):  # the official network and objective
        assert (c.conv_padding, c.shortcut, c.loss_reduction) == ("fixed", "every_group", "sum")
    lin = load("linear_eval_imagenet.py", None)
    assert (lin.optimizer, lin.learning_rate, lin.weight_decay, lin.num_epochs, lin.batch_size,
            lin.warmup_epochs) == ("momentum", 0.1, 1e-6, 90, 4096, 0.0)
    lin10 = load("linear_eval_cifar10.py", None)
    assert (lin10.optimizer, lin10.learning_rate, lin10.weight_decay, lin10.num_epochs,
            lin10.batch_size, lin10.warmup_epochs, lin10.eval_split) == (
        "momentum", 0.1, 0.0, 100, 512, 0.0, "test")
    ft1, ft10 = load("finetune_imagenet.py", "1pct"), load("finetune_imagenet.py", "10pct")
    assert (ft1.label_fraction, ft1.num_epochs, ft10.label_fraction, ft10.num_epochs) == (
        0.01, 60, 0.1, 30)
    v2ft = load("finetune_imagenet.py", "v2_1pct")  # the official README's 1% command
    assert (v2ft.optimizer, v2ft.learning_rate, v2ft.lr_scaling, v2ft.batch_size,
            v2ft.num_epochs, v2ft.weight_decay, v2ft.ft_proj_selector,
            v2ft.fine_tune_after_block, v2ft.label_fraction) == (
        "lars", 0.005, "sqrt", 1024, 60, 0.0, 1, -1, 0.01)
    assert optim.scaled_learning_rate(v2ft) == pytest.approx(0.16)
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
