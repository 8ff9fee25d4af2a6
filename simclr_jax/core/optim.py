"""Optimisers (optax LARS / SGD-momentum / AdamW), masks and the learning-rate schedule."""

import math
import re

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


# The official code's supervised head (`head_supervised`): the fine-tuning classifier and the
# online probe of pretraining.
SUPERVISED_HEADS = ("classifier", "probe")


def _names(path) -> list[str]:
    return [getattr(k, "key", str(k)) for k in path]


def _is_batch_norm(names: list[str]) -> bool:
    """BN scale/bias: 'scale' leaves, and 'bias' leaves of modules named *bn* / BatchNorm*."""
    module = names[-2] if len(names) > 1 else ""
    return names[-1] == "scale" or (names[-1] == "bias" and (
        re.search(r"(^|_)bn\d*$", module) is not None or module.startswith("BatchNorm")))


def decay_mask(params) -> dict:
    """LARS weight decay (official exclude_from_weight_decay = batch_normalization, bias,
    head_supervised; the official code then decays head_supervised's kernel through an L2 loss
    term, which is the same gradient wd * W): True for every kernel, False for BN and biases."""
    return jax.tree_util.tree_map_with_path(lambda p, _: _names(p)[-1] == "kernel", params)


def trust_ratio_mask(params) -> dict:
    """LARS trust ratio (official exclude_from_layer_adaptation, the same list): True for the
    kernels outside the supervised head (classifier / probe); BN, biases and the supervised
    head get momentum SGD at the full learning rate."""

    def adapted(path, _):
        names = _names(path)
        return names[-1] == "kernel" and not set(names) & set(SUPERVISED_HEADS)

    return jax.tree_util.tree_map_with_path(adapted, params)


def l2_mask(params) -> dict:
    """Momentum / Adam weight decay: the official wd * l2_loss over every trainable variable
    whose name lacks batch_normalization, i.e. kernels and dense/conv biases, not BN."""
    return jax.tree_util.tree_map_with_path(lambda p, _: not _is_batch_norm(_names(p)), params)


def build_optimizer(config: ml_collections.ConfigDict,
                    schedule: optax.Schedule) -> optax.GradientTransformation:
    """The configured optimiser, with the official code's weight-decay and trust-ratio rules."""
    if config.optimizer == "lars":
        return optax.lars(schedule, weight_decay=config.weight_decay,
                          weight_decay_mask=decay_mask,
                          trust_coefficient=config.lars_trust_coefficient,
                          trust_ratio_mask=trust_ratio_mask, momentum=config.momentum)
    if config.optimizer == "momentum":
        return optax.chain(optax.add_decayed_weights(config.weight_decay, mask=l2_mask),
                           optax.sgd(schedule, momentum=config.momentum, nesterov=True))
    return optax.adamw(schedule, weight_decay=config.weight_decay, mask=l2_mask)


def weight_decay_term(params, weight_decay: float, optimizer: str = "lars") -> jax.Array:
    """wd/2 * sum of squared decayed weights: the L2 term the optimiser's decay corresponds to."""
    mask = decay_mask(params) if optimizer == "lars" else l2_mask(params)
    leaves = jax.tree_util.tree_leaves(
        jax.tree_util.tree_map(lambda p, m: (p**2).sum() if m else 0.0, params, mask))
    return 0.5 * weight_decay * sum(leaves)
