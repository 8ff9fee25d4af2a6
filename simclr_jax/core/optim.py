"""Optimisers (optax LARS / SGD-momentum / AdamW), masks and the learning-rate schedule."""

import math

import jax
import ml_collections
import optax

OPTIMIZERS = ("lars", "momentum", "adam")
LR_SCALINGS = ("linear", "sqrt")


def total_steps(config: ml_collections.ConfigDict, num_examples: int) -> tuple[int, int]:
    """(steps per epoch, total steps) of a run over `num_examples` at config.batch_size:
    num_train_steps > 0 overrides num_epochs; a split smaller than a batch still gets a step."""
    per_epoch = max(1, num_examples // config.batch_size)
    if config.num_train_steps > 0:
        return per_epoch, config.num_train_steps
    return per_epoch, max(1, math.ceil(config.num_epochs * num_examples / config.batch_size))


def scaled_learning_rate(config: ml_collections.ConfigDict) -> float:
    """Peak lr: lr * B / 256 (linear) or lr * sqrt(B) (sqrt), as in the paper."""
    if config.lr_scaling == "linear":
        return config.learning_rate * config.batch_size / 256.0
    return config.learning_rate * math.sqrt(config.batch_size)


def learning_rate_schedule(config: ml_collections.ConfigDict, steps_per_epoch: int,
                           total_steps: int) -> optax.Schedule:
    """Linear warmup over warmup_epochs, then cosine decay to 0 at total_steps."""
    warmup = min(int(round(config.warmup_epochs * steps_per_epoch)), total_steps)
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=scaled_learning_rate(config), warmup_steps=warmup,
        decay_steps=max(total_steps, warmup + 1), end_value=0.0)


def decay_mask(params) -> dict:
    """True for the encoder/head kernels; False for BN scales/biases, biases and the probe."""

    def is_decayed(path, _):
        names = [getattr(k, "key", str(k)) for k in path]
        return names[-1] == "kernel" and "probe" not in names

    return jax.tree_util.tree_map_with_path(is_decayed, params)


def build_optimizer(config: ml_collections.ConfigDict,
                    schedule: optax.Schedule) -> optax.GradientTransformation:
    """The configured optimiser; decay and LARS trust scaling only where decay_mask is True."""
    if config.optimizer == "lars":
        return optax.lars(schedule, weight_decay=config.weight_decay,
                          weight_decay_mask=decay_mask,
                          trust_coefficient=config.lars_trust_coefficient,
                          trust_ratio_mask=decay_mask, momentum=config.momentum)
    if config.optimizer == "momentum":
        return optax.chain(optax.add_decayed_weights(config.weight_decay, mask=decay_mask),
                           optax.sgd(schedule, momentum=config.momentum, nesterov=True))
    return optax.adamw(schedule, weight_decay=config.weight_decay, mask=decay_mask)


def weight_decay_term(params, weight_decay: float) -> jax.Array:
    """wd/2 * sum of squared decayed weights: the L2 term the optimiser's decay corresponds to."""
    leaves = jax.tree_util.tree_leaves(
        jax.tree_util.tree_map(lambda p, m: (p**2).sum() if m else 0.0, params,
                               decay_mask(params)))
    return 0.5 * weight_decay * sum(leaves)
