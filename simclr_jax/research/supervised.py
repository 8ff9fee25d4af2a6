"""Supervised baseline for the sweeps: the same encoder, the same augmentation, cross-entropy.

For the paper's "contrastive learning needs stronger colour augmentation than supervised
learning" table (Table 1): each training image gets view 1 of the SimCLR augmentation (same
config keys, same device ops), and a linear classifier on h is trained jointly with the encoder
by the same optimiser and schedule. Short runs only: no checkpoints (a rerun retrains).
"""

import time
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from simclr_jax.augment import views
from simclr_jax.augment.recipes import Augmentation
from simclr_jax.config import validate
from simclr_jax.core import metric_io, optim, parallel, train
from simclr_jax.data.splits import ArraySplit
from simclr_jax.errors import UserError
from simclr_jax.models.resnet import ResNet
from simclr_jax.models.simclr import build_encoder


class SupervisedModel(nn.Module):
    """Encoder f and a linear classifier on h; returns (logits, h)."""

    encoder: ResNet
    num_classes: int

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = True):
        h = self.encoder(x, train=train)
        return nn.Dense(self.num_classes, name="classifier")(h.astype(jnp.float32)), h


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       splits: tuple[ArraySplit, ArraySplit]) -> tuple[Callable, dict]:
    """Trains on splits[0]; returns (images -> [h, logits], {}): the sweep evaluates h like
    every variant's and reads the classifier's own accuracy from the logits."""
    validate(config)
    train_split, test_split = splits
    if train_split.labels is None:
        raise UserError("the supervised baseline needs a labelled dataset")
    steps_per_epoch, num_steps = optim.total_steps(config, len(train_split))
    model = SupervisedModel(build_encoder(config), train_split.num_classes)
    schedule = optim.learning_rate_schedule(config, steps_per_epoch, num_steps)
    tx = optim.build_optimizer(config, schedule)
    x = jnp.zeros((2, config.image_size, config.image_size, 3))
    variables = parallel.run_once(lambda k: model.init(k, x, train=False),
                                  jax.random.PRNGKey(config.seed))
    params, batch_stats = variables["params"], variables["batch_stats"]
    opt_state = tx.init(params)

    aug = Augmentation.from_config(config)

    @jax.jit
    def step_fn(params, batch_stats, opt_state, step, batch):
        x = views.augment_views(aug, step, batch)[0::2]  # view 1 of each image

        def loss_fn(params):
            (logits, _), updates = model.apply({"params": params, "batch_stats": batch_stats},
                                               x, train=True, mutable=["batch_stats"])
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
            acc = jnp.mean(jnp.argmax(logits, -1) == batch["label"])
            return loss.mean(), (acc, updates["batch_stats"])

        (loss, (acc, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), batch_stats, opt_state, loss, acc

    data = train.input_batches(train_split, config, start_step=0)
    writer = metric_io.JsonlWriter(f"{workdir}/metrics.jsonl")
    t0 = time.time()
    for step, batch in zip(range(num_steps), data, strict=False):
        batch = {k: v for k, v in batch.items() if k not in ("position", "image_id")}
        params, batch_stats, opt_state, loss, acc = step_fn(params, batch_stats, opt_state,
                                                            jnp.int32(step), batch)
        if (step + 1) % config.log_every_steps == 0 or step + 1 == num_steps:
            if not np.isfinite(float(loss)):
                raise UserError(f"supervised loss became {float(loss)} at step {step + 1}")
            writer.write_scalars(step + 1, {"loss": loss, "train_acc": acc,
                                            "learning_rate": schedule(step),
                                            "seconds": time.time() - t0})

    final = {"params": params, "batch_stats": batch_stats}

    @jax.jit
    def apply_fn(x):
        logits, h = model.apply(final, x, train=False)
        return [h, logits]

    return apply_fn, {}
