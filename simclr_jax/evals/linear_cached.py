"""Linear evaluation on cached features (config.cache_features=True), with hyper-parameter
selection.

h is computed once per example of the training and eval splits (eval preprocessing, no
augmentation) into device-sharded banks (evals/features.py, written to disk under the eval
workdir and reused by a rerun); each training batch is gathered from the bank on the devices in
the seeded order training on images uses, so the classifier is the one train_augment=False
gives, without an encoder forward per step.

Selection (the BYOL / big_vision practice): with config.hparam_learning_rates and / or
config.hparam_weight_decays, every (learning rate, weight decay) candidate is trained in the same
pass over the bank (each gathered batch feeds all of them) on the training split minus its last
config.hparam_val_fraction (as train[:99%] / train[99%:] would carve it), and judged by top-1 on
that held-out part (ties: lower loss, then list order). The chosen candidate is then trained on
the whole training split and evaluated once on config.eval_split. Both phases checkpoint and
resume like any classifier training (evals/loop.py).
"""

import itertools
from functools import partial

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import PartitionSpec as P

from simclr_jax.core import optim, parallel
from simclr_jax.core.parallel import DATA_AXIS
from simclr_jax.core.train import TrainState
from simclr_jax.data import pretrain_input
from simclr_jax.errors import UserError
from simclr_jax.evals import classifier, features, jobs, loop
from simclr_jax.evals.classifier import Classifier
from simclr_jax.evals.features import Bank


def candidates(config: ml_collections.ConfigDict) -> list[tuple[float, float]]:
    """(learning rate, weight decay) pairs to select from; one pair: no selection."""
    lrs = tuple(config.hparam_learning_rates or ()) or (config.learning_rate,)
    wds = tuple(config.hparam_weight_decays or ()) or (config.weight_decay,)
    return [(float(lr), float(wd)) for lr, wd in itertools.product(lrs, wds)]


def with_hparams(config: ml_collections.ConfigDict, lr: float, wd: float
                 ) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict(config.to_dict())
    config.learning_rate, config.weight_decay = lr, wd
    return config


def _start(config: ml_collections.ConfigDict, model: Classifier, width: int, num_examples: int,
           mesh, probe: dict | None = None):
    """(initial state, tx, schedule, number of steps) of one classifier; the same init, order
    and optimiser as classifier.train_classifier, so both give the same classifier."""
    # Flax derives init keys from module paths: with the same seed, the layer "classifier"
    # starts exactly as in the full model, also when it is not zero-initialised.
    h = jnp.zeros((1, width))
    params = parallel.run_once(lambda k: model.init(k, h, train=False)["params"],
                               jax.random.PRNGKey(config.seed),
                               out_shardings=parallel.replicated(mesh))
    if probe is not None:  # config.classifier_from_probe: start from the checkpoint's probe
        params = {**params, "classifier": probe}
    steps_per_epoch, num_steps = optim.total_steps(config, num_examples)
    schedule = optim.learning_rate_schedule(config, steps_per_epoch, num_steps)
    tx = classifier.build_tx(config, schedule, jax.tree_util.tree_map(lambda _: True, params))
    state = jax.jit(lambda p: TrainState(step=jnp.zeros((), jnp.int32), params=p,
                                         batch_stats={}, opt_state=tx.init(p)),
                    out_shardings=parallel.replicated(mesh))(params)
    return state, tx, schedule, num_steps


def train_on_bank(bank: Bank, examples: np.ndarray, configs: list[ml_collections.ConfigDict],
                  mesh, writer, *, checkpoint_step: int, directory: str | None = None,
                  wanted: dict | None = None, probe: dict | None = None
                  ) -> tuple[Classifier, tuple[TrainState, ...]]:
    """One classifier per config, trained together on the bank rows of `examples` (indices
    into the split) in the seeded order of pretrain_input.stream_indices; each starts from
    `probe` if given (config.classifier_from_probe)."""
    base = configs[0]
    model = Classifier(None, None, bank.num_classes, frozen_encoder=True,
                       zero_init=base.zero_init_classifier)
    width = bank.features.shape[-1]
    started = [_start(c, model, width, len(examples), mesh, probe) for c in configs]
    num_steps = started[0][3]
    several = len(configs) > 1

    def step(states, batch):
        out, metrics = [], {}
        for k, (state, (_, tx, schedule, _)) in enumerate(zip(states, started, strict=True)):
            state, m = classifier.train_step(state, batch, model=model, tx=tx,
                                             schedule=schedule)
            out.append(state)
            metrics.update({f"{name}_{k}" if several else name: v for name, v in m.items()})
        return tuple(out), metrics

    step_fn = jax.jit(step, out_shardings=parallel.replicated(mesh))
    gather = features.gather_fn(mesh, bank.global_batch)
    replicated = parallel.replicated(mesh)

    def batches(start_step: int):
        order = pretrain_input.stream_indices(base.seed, len(examples), base.batch_size,
                                              start_step, 0, 1)
        first = True
        for idx, _ in order:
            slots = jax.device_put(bank.slots(examples[idx]).astype(np.int32), replicated)
            if first:  # its collective must not wait for a peer that is still compiling
                gather.lower(bank.features, bank.labels, slots).compile()
                features.multihost_sync("simclr_jax.gather_compiled")
                first = False
            yield parallel.settled(gather(bank.features, bank.labels, slots))

    states = loop.train(tuple(s[0] for s in started), step_fn, batches, num_steps,
                        config=base, checkpoint_step=checkpoint_step, writer=writer,
                        directory=directory, wanted=wanted)
    return model, states


@partial(jax.jit, static_argnames="model")
def _bank_batch_sums(params: tuple, feats, labels, mask, b, keep, *, model):
    h, y, m = feats[b], labels[b], mask[b] & keep
    return [jobs.metric_sums(model.apply({"params": p}, h, train=False), y, m) for p in params]


def eval_on_bank(model: Classifier, states: tuple[TrainState, ...], bank: Bank, mesh,
                 examples: np.ndarray | None = None) -> list[dict[str, float]]:
    """Exact metrics of each classifier on the bank (on its rows of `examples` if given)."""
    params = tuple(s.params for s in states)
    totals = [[] for _ in states]
    for b in range(bank.index.shape[0]):
        keep = (np.ones(bank.global_batch, bool) if examples is None
                else np.isin(bank.index[b], examples))
        keep = features.global_from_host(mesh, keep, P(DATA_AXIS))
        for k, sums in enumerate(_bank_batch_sums(params, bank.features, bank.labels,
                                                  bank.mask, b, keep, model=model)):
            totals[k].append(sums)
    return [jobs.topk_sums_to_metrics(t) for t in totals]


def _best(metrics: list[dict[str, float]]) -> int:
    return min(range(len(metrics)), key=lambda k: (-metrics[k]["top1"], metrics[k]["loss"], k))


def select(bank: Bank, config: ml_collections.ConfigDict, mesh, writer, *, checkpoint_step: int,
           workdir: str | None, checkpoint: str, probe: dict | None = None
           ) -> tuple[ml_collections.ConfigDict, dict]:
    """(config with the chosen lr / wd, the record of every candidate and the choice)."""
    pairs = candidates(config)
    n = bank.num_examples
    n_val = max(1, int(round(config.hparam_val_fraction * n)))
    if n_val >= n:
        raise UserError(f"config.hparam_val_fraction={config.hparam_val_fraction} leaves no "
                        f"training examples of the {n} in {config.train_split}: use a smaller "
                        f"fraction (the default 0.01 holds out train[99%:])")
    train_part, val_part = np.arange(n - n_val), np.arange(n - n_val, n)
    configs = [with_hparams(config, lr, wd) for lr, wd in pairs]
    directory = (loop.state_dir(workdir, checkpoint_step, "select") if workdir is not None
                 else None)
    model, states = train_on_bank(
        bank, train_part, configs, mesh, writer, checkpoint_step=checkpoint_step,
        directory=directory,
        wanted=loop.identity(config, checkpoint, phase="select", candidates=pairs), probe=probe)
    val = eval_on_bank(model, states, bank, mesh, examples=val_part)
    k = _best(val)
    record = {"val_fraction": config.hparam_val_fraction,
              "num_selection_train_examples": len(train_part),
              "num_val_examples": len(val_part),
              "candidates": [{"learning_rate": lr, "weight_decay": wd, "val_top1": m["top1"],
                              "val_top5": m["top5"], "val_loss": m["loss"]}
                             for (lr, wd), m in zip(pairs, val, strict=True)],
              "chosen": {"learning_rate": pairs[k][0], "weight_decay": pairs[k][1]}}
    return configs[k], record


def train_and_eval(pre, config: ml_collections.ConfigDict, splits: jobs.Splits, mesh, writer,
                   workdir: str | None) -> tuple[dict, TrainState]:
    """Linear evaluation on cached features: (results, the final classifier state)."""
    train = features.compute(pre, splits.train_eval, image_size=config.image_size,
                             global_batch=config.eval_batch_size, mesh=mesh,
                             cache=jobs.feature_cache(workdir, config, pre, "train"))
    test = features.compute(pre, splits.test, image_size=config.image_size,
                            global_batch=config.eval_batch_size, mesh=mesh,
                            cache=jobs.feature_cache(workdir, config, pre, "eval"))
    extra = {}
    probe = pre.probe_variables if config.classifier_from_probe else None
    if len(candidates(config)) > 1:
        config, extra["hparam_selection"] = select(train, config, mesh, writer,
                                                   checkpoint_step=pre.step, workdir=workdir,
                                                   checkpoint=pre.path, probe=probe)
    directory = (loop.state_dir(workdir, pre.step, "classifier") if workdir is not None
                 else None)
    model, (state,) = train_on_bank(
        train, np.arange(train.num_examples), [config], mesh, writer,
        checkpoint_step=pre.step, directory=directory,
        wanted=loop.identity(config, pre.path, phase="final"), probe=probe)
    (metrics,) = eval_on_bank(model, (state,), test, mesh)
    results = {"top1": metrics["top1"], "top5": metrics["top5"], "eval_loss": metrics["loss"],
               "num_eval_examples": metrics["num_examples"],
               "num_train_examples": train.num_examples, "train_steps": int(state.step),
               "learning_rate": config.learning_rate, "weight_decay": config.weight_decay,
               **extra}
    return results, state
