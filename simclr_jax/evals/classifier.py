"""The classifier the linear-eval and fine-tune jobs train on a pretrained encoder.

Encoder f (trainable after `fine_tune_after_block`, or frozen with BN in inference mode),
optionally head layers 1..ft_proj_selector of g, then a linear layer (the official
`head_supervised`: dense with bias, N(0, 0.01) or zero init); trained on the global batch with
cross-replica BN, as in pretraining. Linear evaluation is this training with the whole encoder
frozen (fine_tune_after_block=4, as in the official code). As the official code, gradients stop
after the last frozen stage, and the frozen stages' BN uses batch statistics unless
config.frozen_bn='inference'.
"""

import re
from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from simclr_jax.core import optim, parallel
from simclr_jax.core.train import TrainState
from simclr_jax.data import eval_input
from simclr_jax.data.sources import Source
from simclr_jax.errors import UserError
from simclr_jax.evals import jobs, loop
from simclr_jax.evals.pretrained import Pretrained
from simclr_jax.models import ProjectionHead, ResNet
from simclr_jax.models.heads import dense_init


class Classifier(nn.Module):
    """Encoder f, optionally head layers 1..proj_selector of g, then a linear classifier.

    x: uint8 images (scaled to [0, 1] here, as in pretraining) or, with encoder=None, features.
    With `frozen_encoder` the encoder runs with BN in inference mode under stop_gradient.
    """

    encoder: ResNet | None
    head: ProjectionHead | None
    num_classes: int
    proj_selector: int = 0
    frozen_encoder: bool = False
    zero_init: bool = True
    after_block: int = -1  # fine_tune_after_block: stages 0..after_block are frozen
    frozen_bn_inference: bool = False  # their BN on the moving statistics (else batch stats)

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = True) -> jnp.ndarray:
        h = x
        if self.encoder is not None:
            x = x.astype(jnp.float32) / 255.0
            if self.frozen_encoder:
                h = self.encoder(x, train=False)
            else:
                h = self.encoder(x, train=train, stop_gradient_after=self.after_block,
                                 inference_bn_through=(self.after_block
                                                       if self.frozen_bn_inference else -1))
        if self.frozen_encoder:
            h = jax.lax.stop_gradient(h)
        feats = self.head(h, train=train)[self.proj_selector] if self.proj_selector else h
        init = nn.initializers.zeros if self.zero_init else dense_init
        return nn.Dense(self.num_classes, kernel_init=init, dtype=jnp.float32,
                        name="classifier")(feats.astype(jnp.float32))


def _head_layer(name: str) -> int:
    """1-based layer index of a head submodule name (nl_0_dense -> 1, linear_bn -> 1)."""
    m = re.match(r"nl_(\d+)_", name)
    return int(m.group(1)) + 1 if m else 1


def _encoder_trainable(name: str, after_block: int) -> bool:
    """Official fine_tune_after_block: -1 all; 0 all but the stem; k: block groups > k."""
    if after_block < 0:
        return True
    if name.startswith("stem"):
        return False
    m = re.match(r"block(\d+)_", name)
    return m is not None and int(m.group(1)) > after_block


def trainable_mask(params, fine_tune_after_block: int, proj_selector: int):
    """True for the parameters fine-tuning updates; the others stay bitwise as restored."""

    def trainable(path, _):
        names = [getattr(k, "key", str(k)) for k in path]
        if names[0] == "encoder":
            return _encoder_trainable(names[1], fine_tune_after_block)
        if names[0] == "head":
            return _head_layer(names[1]) <= proj_selector
        return True

    return jax.tree_util.tree_map_with_path(trainable, params)


def build_tx(config: ml_collections.ConfigDict, schedule: optax.Schedule, mask
             ) -> optax.GradientTransformation:
    """The configured optimiser on trainable parameters; frozen ones get exactly zero updates."""
    labels = jax.tree_util.tree_map(lambda t: "train" if t else "frozen", mask)
    return optax.multi_transform({"train": optim.build_optimizer(config, schedule),
                                  "frozen": optax.set_to_zero()}, labels)


def train_step(state: TrainState, batch: dict, *, model: Classifier, tx, schedule):
    """One supervised step over the global batch (cross-replica BN, as in pretraining)."""

    def loss_fn(params):
        logits, updates = model.apply({"params": params, "batch_stats": state.batch_stats},
                                      batch["image"], train=True, mutable=["batch_stats"])
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()
        return loss, (logits, updates.get("batch_stats", {}))

    (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    metrics = {"train_loss": loss, "learning_rate": schedule(state.step),
               "train_top1": jnp.mean(jnp.argmax(logits, -1) == batch["label"])}
    return state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                         batch_stats=batch_stats, opt_state=opt_state), metrics


def build_classifier(pre: Pretrained, config: ml_collections.ConfigDict, num_classes: int,
                     mesh) -> tuple[Classifier, dict]:
    """The classifier model and its variables: pretrained encoder/head, and a fresh linear layer
    (or, with config.classifier_from_probe, the checkpoint's probe)."""
    selector = config.ft_proj_selector
    layers = 0 if pre.head is None or pre.config.proj_head_mode == "none" else (
        1 if pre.config.proj_head_mode == "linear" else pre.config.num_proj_layers)
    if selector > layers:
        raise UserError(f"config.ft_proj_selector={selector} but the pretrained head has "
                        f"{layers} layer(s) (proj_head_mode={pre.config.proj_head_mode!r})")
    model = Classifier(pre.module, pre.head if selector else None, num_classes, selector,
                       frozen_encoder=config.fine_tune_after_block >= 4,
                       zero_init=config.zero_init_classifier,
                       after_block=config.fine_tune_after_block,
                       frozen_bn_inference=config.frozen_bn == "inference")
    x = jnp.zeros((1, config.image_size, config.image_size, 3))
    init = parallel.run_once(lambda k: model.init(k, x, train=False),
                             jax.random.PRNGKey(config.seed),
                             out_shardings=parallel.replicated(mesh))
    variables = {c: dict(init[c]) for c in ("params", "batch_stats")}
    for c in variables:
        variables[c]["encoder"] = pre.variables[c]
        if selector:
            variables[c]["head"] = pre.head_variables[c]
    if config.classifier_from_probe:
        probe, fresh = pre.probe_variables, variables["params"]["classifier"]
        shapes = {k: tuple(v.shape) for k, v in probe.items()}
        if shapes != {k: tuple(v.shape) for k, v in fresh.items()}:
            raise UserError(
                f"the checkpoint's probe has shapes {shapes} but the classifier on "
                f"{'h' if not selector else f'head layer {selector}'} for {num_classes} "
                f"classes needs {({k: tuple(v.shape) for k, v in fresh.items()})} "
                f"(config.classifier_from_probe, config.ft_proj_selector)")
        variables["params"]["classifier"] = probe
    return model, variables


def probe_classes(pre: Pretrained) -> int:
    """Number of classes of the checkpoint's probe."""
    return int(pre.probe_variables["kernel"].shape[-1])


def train_classifier(pre: Pretrained, config: ml_collections.ConfigDict, train: Source | None,
                     mesh, writer, *, workdir: str | None = None
                     ) -> tuple[Classifier, TrainState]:
    """Trains the classifier (and the unfrozen encoder) on `train`, streamed; returns the model
    and state. With `workdir` the state is checkpointed there and resumed (evals/loop.py).

    With config.num_train_steps=0 (and classifier_from_probe) nothing trains and `train` may be
    None: the state holds the checkpoint's own classifier."""
    num_classes = train.num_classes if train is not None else probe_classes(pre)
    model, variables = build_classifier(pre, config, num_classes, mesh)
    if config.num_train_steps == 0:
        state = TrainState(step=jnp.zeros((), jnp.int32), params=variables["params"],
                           batch_stats=variables["batch_stats"], opt_state=())
        return model, state
    steps_per_epoch, num_steps = optim.total_steps(config, len(train))
    schedule = optim.learning_rate_schedule(config, steps_per_epoch, num_steps)
    mask = trainable_mask(variables["params"], config.fine_tune_after_block,
                          config.ft_proj_selector)
    tx = build_tx(config, schedule, mask)
    state = jax.jit(lambda v: TrainState(step=jnp.zeros((), jnp.int32), params=v["params"],
                                         batch_stats=v["batch_stats"],
                                         opt_state=tx.init(v["params"])),
                    out_shardings=parallel.replicated(mesh))(variables)
    step_fn = jax.jit(partial(train_step, model=model, tx=tx, schedule=schedule),
                      out_shardings=parallel.replicated(mesh))

    def batches(start_step: int):
        data = eval_input.train_batches(
            train, seed=config.seed, global_batch=config.batch_size,
            image_size=config.image_size, crop_area_min=config.crop_area_min,
            augment=config.train_augment, start_step=start_step,
            process_index=jax.process_index(), process_count=jax.process_count())
        return parallel.prefetch_to_mesh(data, mesh, drop=("position",))

    directory = (loop.state_dir(workdir, pre.step, "classifier") if workdir is not None
                 else None)
    state = loop.train(state, step_fn, batches, num_steps, config=config,
                       checkpoint_step=pre.step, writer=writer, directory=directory,
                       wanted=loop.identity(config, pre.path))
    return model, state


def eval_classifier(model: Classifier, state: TrainState, config, test: Source, mesh
                    ) -> dict:
    """Exact top-1 / top-5 / loss of the trained classifier on `test` (eval preprocessing)."""
    apply = jax.jit(lambda v, x: model.apply(v, x, train=False))
    variables = {"params": state.params, "batch_stats": state.batch_stats}

    def batches():
        for b in eval_input.eval_batches(test, global_batch=config.eval_batch_size,
                                         image_size=config.image_size,
                                         process_index=jax.process_index(),
                                         process_count=jax.process_count()):
            g = parallel.global_batch(mesh, {k: b[k] for k in ("image", "label", "mask")})
            yield apply(variables, g["image"]), g["label"], g["mask"]

    return jobs.topk_metrics(batches())
