"""Linear evaluation: a linear classifier on the frozen encoder's h (BN in inference mode).

Training augments with random crop + flip (config.train_augment). With
config.cache_features=True, h is computed once per example (eval preprocessing, no augmentation)
and the classifier trains on those cached features: the same result as train_augment=False,
without a forward pass of the encoder per step. The command is simclr_jax/linear_eval.py.
"""

from functools import partial

import jax
import jax.numpy as jnp
import ml_collections

from simclr_jax.core import optim, parallel
from simclr_jax.core.train import TrainState
from simclr_jax.data import pretrain_input
from simclr_jax.data.splits import ArraySplit
from simclr_jax.evals import classifier, jobs
from simclr_jax.evals.classifier import Classifier
from simclr_jax.evals.pretrained import Pretrained


def linear_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """`config` with the whole encoder frozen and the classifier reading h."""
    config = ml_collections.ConfigDict(config.to_dict())
    config.fine_tune_after_block = 4
    config.ft_proj_selector = 0
    return config


def train_cached(pre: Pretrained, config: ml_collections.ConfigDict, train: ArraySplit, mesh,
                 writer) -> tuple[Classifier, TrainState]:
    """The linear classifier trained on h computed once; same order, init and optimiser as
    classifier.train_classifier, so without augmentation both give the same classifier."""
    num_classes = train.num_classes if train is not None else classifier.probe_classes(pre)
    model = Classifier(None, None, num_classes, frozen_encoder=True,
                       zero_init=config.zero_init_classifier)
    # Flax derives init keys from module paths: with the same seed, the layer "classifier"
    # starts exactly as in the full model, also when it is not zero-initialised.
    h = jnp.zeros((1, pre.width))
    params = jax.jit(lambda k: model.init(k, h, train=False)["params"],
                     out_shardings=parallel.replicated(mesh))(jax.random.PRNGKey(config.seed))
    if config.classifier_from_probe:
        params = {**params, "classifier": pre.probe_variables}
    if config.num_train_steps == 0:
        return model, TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats={},
                                 opt_state=())
    feats = jobs.features(pre, train, config.image_size, config.eval_batch_size, mesh)
    steps_per_epoch, num_steps = optim.total_steps(config, len(train))
    schedule = optim.learning_rate_schedule(config, steps_per_epoch, num_steps)
    tx = classifier.build_tx(config, schedule, jax.tree_util.tree_map(lambda _: True, params))
    state = jax.jit(lambda p: TrainState(step=jnp.zeros((), jnp.int32), params=p,
                                         batch_stats={}, opt_state=tx.init(p)),
                    out_shardings=parallel.replicated(mesh))(params)
    step_fn = jax.jit(partial(classifier.train_step, model=model, tx=tx, schedule=schedule),
                      out_shardings=parallel.replicated(mesh))
    order = pretrain_input.stream_indices(config.seed, len(train), config.batch_size, 0,
                                          jax.process_index(), jax.process_count())
    batches = (parallel.global_batch(mesh, {"image": feats[idx], "label": train.labels[idx]})
               for idx, _ in order)
    state = classifier.run_steps(zip(range(1, num_steps + 1), batches, strict=False), state,
                                 step_fn, config, pre.step, writer)
    return model, state


def eval_cached(model: Classifier, state: TrainState, pre: Pretrained, config,
                test: ArraySplit, mesh) -> dict:
    """Exact metrics of the classifier on the test split's h (computed once)."""
    feats = jobs.features(pre, test, config.image_size, config.eval_batch_size, mesh)
    apply = jax.jit(lambda p, h: model.apply({"params": p}, h, train=False))
    batches = jobs.host_batches({"h": feats, "label": test.labels},
                                config.eval_batch_size, mesh)
    return jobs.topk_metrics((apply(state.params, b["h"]), b["label"], b["mask"])
                             for b in batches)


def train_and_eval(pre: Pretrained, config: ml_collections.ConfigDict, mesh, writer
                   ) -> tuple[dict, TrainState]:
    """Linear evaluation of `pre`: (results, the final train state incl. the frozen encoder)."""
    config = linear_config(config)
    train, test = jobs.load_splits(config, "linear evaluation")
    if config.cache_features:
        model, state = train_cached(pre, config, train, mesh, writer)
        metrics = eval_cached(model, state, pre, config, test, mesh)
    else:
        model, state = classifier.train_classifier(pre, config, train, mesh, writer)
        metrics = classifier.eval_classifier(model, state, config, test, mesh)
    writer.write_scalars(int(state.step), {
        "top1": metrics["top1"], "top5": metrics["top5"], "eval_loss": metrics["loss"],
        "checkpoint_step": pre.step})
    results = {"top1": metrics["top1"], "top5": metrics["top5"], "eval_loss": metrics["loss"],
               "num_eval_examples": metrics["num_examples"],
               "num_train_examples": len(train) if train is not None else 0,
               "train_steps": int(state.step)}
    return results, state


def evaluate(pre: Pretrained, config: ml_collections.ConfigDict, mesh, writer) -> dict:
    """jobs.EvaluateFn of this job."""
    return train_and_eval(pre, config, mesh, writer)[0]


def run(config: ml_collections.ConfigDict, workdir: str, *, wait: bool = False,
        wait_timeout_s: float = 3600.0) -> dict:
    """The linear evaluation job (library entry point)."""
    return jobs.run_job("linear_eval", config, workdir, evaluate, wait=wait,
                        wait_timeout_s=wait_timeout_s)

