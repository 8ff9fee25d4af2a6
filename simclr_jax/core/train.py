"""SimCLR pretraining: state creation, the sharded train step and the training loop."""

import dataclasses
import math
import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from clu import periodic_actions
from etils import epath

from simclr_jax.augment import recipes, views
from simclr_jax.core import (
    backend,
    checkpointing,
    chunked_loss,
    log_files,
    losses,
    metric_io,
    optim,
    parallel,
    resume,
    run_report,
    shared_workdir,
    workdir_lock,
)
from simclr_jax.core.preemption import PreemptionWatcher
from simclr_jax.core.watchdog import StallWatchdog
from simclr_jax.data import builders, pretrain_input, sources
from simclr_jax.data.splits import ArraySplit
from simclr_jax.errors import UserError
from simclr_jax.models import build_model


class TrainState(flax.struct.PyTreeNode):
    """Everything a checkpoint holds besides the config."""

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any


def create_train_state(model, tx: optax.GradientTransformation, rng: jax.Array,
                       image_size: int) -> TrainState:
    """Fresh parameters, BN statistics and optimiser state."""
    variables = model.init(rng, jnp.zeros((2, image_size, image_size, 3)), train=False)
    params = variables["params"]
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      batch_stats=variables["batch_stats"], opt_state=tx.init(params))


def init_state_on_mesh(model, tx, config, mesh) -> TrainState:
    """create_train_state, jitted so the state is born replicated on the mesh."""
    return parallel.run_once(partial(create_train_state, model, tx, image_size=config.image_size),
                             jax.random.PRNGKey(config.seed),
                             out_shardings=parallel.replicated(mesh))


def loss_and_grads(params, batch_stats, x: jnp.ndarray, labels: jnp.ndarray, *, model,
                   config: ml_collections.ConfigDict, mesh):
    """Gradients of NT-Xent (+ probe loss) for interleaved views x (2B, H, W, 3).

    Returns (grads, metrics, updated batch_stats).
    """

    def loss_fn(params):
        (z, _, logits), updates = model.apply(
            {"params": params, "batch_stats": batch_stats}, x, train=True,
            mutable=["batch_stats"])
        z = z.reshape((-1, 2, z.shape[-1]))
        if config.loss_chunk_size:  # the same NT-Xent, memory-bounded
            loss, metrics = chunked_loss.nt_xent_chunked(
                z[:, 0], z[:, 1], config.temperature, config.loss_chunk_size, mesh=mesh,
                normalize=config.normalize_embeddings, reduction=config.loss_reduction)
        else:
            loss, metrics = losses.contrastive_loss(
                z[:, 0], z[:, 1], config.temperature, mesh=mesh,
                normalize=config.normalize_embeddings, loss=config.loss,
                margin=config.loss_margin, reduction=config.loss_reduction)
        total = loss
        if logits is not None:
            probe_loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
            # The probe reads stop_gradient(h): this term trains the probe alone.
            total = total + probe_loss
            metrics["probe_loss"] = probe_loss
            metrics["probe_acc"] = jnp.mean(jnp.argmax(logits, -1) == labels)
        metrics["loss"] = loss
        return total, (metrics, updates["batch_stats"])

    grads, (metrics, new_batch_stats) = jax.grad(loss_fn, has_aux=True)(params)
    return grads, metrics, new_batch_stats


def train_step(state: TrainState, batch: dict[str, jax.Array], *, model, tx, schedule,
               config: ml_collections.ConfigDict, mesh) -> tuple[TrainState, dict]:
    """One SimCLR step over the global batch (jit it with the batch sharded over `mesh`)."""
    x = views.augment_views(recipes.Augmentation.from_config(config), state.step, batch)
    labels = jnp.repeat(batch["label"], 2)
    grads, metrics, batch_stats = loss_and_grads(state.params, state.batch_stats, x, labels,
                                                 model=model, config=config, mesh=mesh)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics["learning_rate"] = schedule(state.step)
    metrics["weight_decay_term"] = optim.weight_decay_term(state.params, config.weight_decay,
                                                           config.optimizer)
    # One cheap reduction, so a step that blows up the weights is never checkpointed.
    metrics["params_finite"] = jnp.all(jnp.array(
        [jnp.all(jnp.isfinite(p)) for p in jax.tree_util.tree_leaves(params)]))
    new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                              opt_state=opt_state)
    return new_state, metrics


def make_train_step(model, tx, schedule, config, mesh) -> Callable:
    """The jitted step: state replicated and donated, batch sharded over the data axis."""
    step = partial(train_step, model=model, tx=tx, schedule=schedule, config=config, mesh=mesh)
    return jax.jit(step, donate_argnums=0,
                   out_shardings=(parallel.replicated(mesh), parallel.replicated(mesh)))


def check_finite(history: list[tuple[int, dict]], mngr, workdir: str) -> None:
    """Stops the run at the first step whose loss or updated weights are NaN/inf.

    Runs before any checkpoint of those steps is saved, so the checkpoints on disk stay good.
    """
    for step, metrics in history:
        loss = float(metrics["loss"])
        what = (f"loss became {loss}" if not math.isfinite(loss) else
                "the weights became NaN/inf" if not metrics["params_finite"] else None)
        if what:
            last = mngr.latest_step()
            kept = (f"the last good checkpoint (step {last}) is kept in "
                    f"{checkpointing.checkpoint_dir(workdir)}" if last is not None
                    else "no checkpoint had been written yet")
            raise UserError(
                f"{what} at step {step}; training stopped and {kept}. Lower "
                f"config.learning_rate, raise config.temperature, or use config.dtype=float32")


def summarize(history: list[tuple[int, dict]]) -> dict[str, float]:
    """Mean of each metric over the steps since the last log."""
    keys = [k for k in history[0][1] if k != "params_finite"]
    return {k: float(np.mean([float(m[k]) for _, m in history])) for k in keys}


@dataclasses.dataclass(frozen=True)
class Training:
    """The pieces of a pretraining run that follow from its config (no state, no I/O)."""

    split: sources.Source
    model: Any
    tx: optax.GradientTransformation
    schedule: optax.Schedule
    steps_per_epoch: int
    num_steps: int


def build_training(config: ml_collections.ConfigDict, mesh) -> Training:
    """Opens this process's share of the train split for a validated `config` (the command
    validates it: config.validate) and builds what training needs on `mesh`."""
    parallel.check_global_batch(config.batch_size, mesh)
    builders.hide_accelerators_from_tf()
    # Process 0 first: the first use of an embedded dataset prepares it in data_dir, and
    # several processes preparing the same directory at once collide.
    split = parallel.process_0_first(lambda: sources.open_source(
        config, config.train_split, process_index=jax.process_index(),
        process_count=jax.process_count()))
    if config.batch_size > len(split):
        raise UserError(f"config.batch_size={config.batch_size} is larger than the "
                        f"{len(split)} examples of {config.dataset}:{config.train_split}")
    steps_per_epoch, num_steps = optim.total_steps(config, len(split))
    num_classes = split.num_classes if config.online_probe else 0
    model = build_model(config, num_classes=num_classes,
                        conv=backend.conv_module(config.conv_impl))
    schedule = optim.learning_rate_schedule(config, steps_per_epoch, num_steps)
    tx = optim.build_optimizer(config, schedule)
    return Training(split=split, model=model, tx=tx, schedule=schedule,
                    steps_per_epoch=steps_per_epoch, num_steps=num_steps)


def input_batches(split: sources.Source | ArraySplit, config: ml_collections.ConfigDict,
                  start_step: int) -> Iterator[dict[str, np.ndarray]]:
    """This process's rows of every global batch from `start_step` on (host numpy)."""
    return pretrain_input.pretrain_batches(
        split, config, start_step=start_step, process_index=jax.process_index(),
        process_count=jax.process_count())


def watched_input(batches: Iterator[dict], watchdog: StallWatchdog) -> Iterator[dict]:
    """`batches`, telling `watchdog` when the loop waits for the host input ('input'); once
    the input has delivered, the loop is back in the phase that asked for it."""
    batches = iter(batches)
    while True:
        phase = watchdog.phase
        watchdog.enter("input")
        batch = next(batches, None)
        watchdog.enter(phase)
        if batch is None:
            return
        yield batch


# (config, train split, mesh) -> fn(state) -> extra metrics for the log rows (the kNN monitor,
# evals/monitor.py: a higher layer, so the pretrain command passes it in).
MonitorFactory = Callable[[ml_collections.ConfigDict, sources.Source, Any],
                          Callable[[TrainState], dict[str, float]]]


def abstract_state(model, tx, config, mesh) -> TrainState:
    """The state's shapes and dtypes, replicated on `mesh`: a restore target (no compute)."""
    shapes = jax.eval_shape(partial(create_train_state, model, tx, image_size=config.image_size),
                            jax.random.PRNGKey(config.seed))
    sharding = parallel.replicated(mesh)
    return jax.tree_util.tree_map(
        lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), shapes)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       monitor: MonitorFactory | None = None) -> TrainState:
    """Pretrains per a validated `config` (config.validate), resuming from the newest intact
    checkpoint in `workdir` if any.

    With config.knn_every_steps > 0, `monitor(config, split, mesh)(state)` adds its metrics
    to the log rows of every knn_every_steps-th step (the pretrain job passes
    evals.monitor.Monitor).
    The workdir must be one every process sees (core/shared_workdir.py); one job per workdir
    (core/workdir_lock.py); resuming checks the config against the
    checkpoint's (core/resume.py) before any work; a finished run is not trained again.
    """
    t_start = time.time()
    mesh = parallel.make_mesh()
    epath.Path(workdir).mkdir(parents=True, exist_ok=True)
    shared_workdir.check_shared(workdir)  # a lock on a per-host disk would lock nothing
    with workdir_lock.locked(str(checkpointing.absolute(workdir))):
        start = resume.newest_intact_step(workdir)
        if start is not None:
            saved = resume.read_saved_config(checkpointing.checkpoint_dir(workdir) / str(start))
            if saved is not None:
                resume.check_config(saved, config, start, workdir)
            # A checkpoint written before a key existed was trained with its legacy behaviour.
            config = resume.resume_config(config, saved)
        parts = build_training(config, mesh)
        ckpt = checkpointing.Writer(
            checkpointing.checkpoint_manager(workdir, keep=config.keep_checkpoints))
        try:
            if start is None:
                state, start = init_state_on_mesh(parts.model, parts.tx, config, mesh), 0
            else:
                start, state = resume.restore_newest(
                    ckpt.mngr, workdir, start,
                    abstract_state(parts.model, parts.tx, config, mesh))
                logging.info("Resumed from checkpoint step %d in %s", start, workdir)
            if start >= parts.num_steps:
                if jax.process_index() == 0:
                    print(run_report.already_complete(workdir, config, start, parts.num_steps),
                          flush=True)
            else:
                state = _train(config, workdir, mesh, parts, state, start, ckpt, monitor)
                ckpt.finish()  # the summary lists the final step's checkpoint
                if jax.process_index() == 0:
                    print(run_report.final_summary(
                        workdir, config, start=start, step=int(state.step),
                        num_steps=parts.num_steps, wall_s=time.time() - t_start), flush=True)
        except BaseException:
            # Another error is on its way: wait for the save in flight (its steps stay
            # intact) and close Orbax's threads now, not at interpreter exit.
            ckpt.close(quiet=True)
            raise
        ckpt.close()
    return state


def _train(config, workdir, mesh, parts: Training, state: TrainState, start: int,
           ckpt: checkpointing.Writer, monitor: MonitorFactory | None
           ) -> TrainState:
    """The loop from `start` to the last step (or a preemption notice); the final state."""
    split, model, tx, schedule = parts.split, parts.model, parts.tx, parts.schedule
    num_steps = parts.num_steps
    writer = metric_io.create_writer(workdir)
    if start == 0:
        writer.write_hparams({k: v for k, v in config.items() if not isinstance(v, dict)})
    step_fn = make_train_step(model, tx, schedule, config, mesh)
    knn_monitor = None
    if config.knn_every_steps:
        if monitor is None:
            raise ValueError("config.knn_every_steps > 0 needs monitor= (evals.monitor.Monitor)")
        knn_monitor = monitor(config, split, mesh)
    data = input_batches(split, config, start)
    progress = (periodic_actions.ReportProgress(num_train_steps=num_steps, writer=writer)
                if jax.process_index() == 0 else lambda step: None)
    history: list[tuple[int, dict]] = []
    t0, images = time.time(), 0
    preempted = PreemptionWatcher()
    watchdog = StallWatchdog(config.stall_timeout_s, log_files.log_path(
        workdir, f"stalled-process-{jax.process_index()}.txt"))
    try:
        # Start-up (the pipeline's first reads, compiling the step) has no fixed bound: the
        # watchdog is armed once the first step has run.
        watchdog.enter("compile", start)
        batches = parallel.compile_then_meet(step_fn, state, parallel.prefetch_to_mesh(
            watched_input(data, watchdog), mesh, drop=("position",)))
        for step, batch in zip(range(start + 1, num_steps + 1), batches, strict=False):
            if step == start + 2:
                watchdog.arm()
            watchdog.enter("step", step)
            state, metrics = step_fn(state, batch)
            history.append((step, metrics))
            images += config.batch_size
            progress(step)
            # A preemption notice (SIGTERM) makes this step the last one: save it and return.
            stop = preempted(step)
            save_now = stop or step % config.checkpoint_every_steps == 0 or step == num_steps
            if step % config.log_every_steps == 0 or save_now:
                history = jax.device_get(history)
                check_finite(history, ckpt.mngr, workdir)
                summary = summarize(history)
                summary["images_per_sec"] = images / (time.time() - t0)
                if knn_monitor is not None and step % config.knn_every_steps == 0:
                    watchdog.enter("kNN monitor")
                    summary.update(knn_monitor(state))
                writer.write_scalars(step, summary)
                history, t0, images = [], time.time(), 0
            if save_now:
                watchdog.enter("checkpoint save")  # waits for the previous save first
                ckpt.save(step, state, config)
            if stop:
                logging.warning("Preempted (SIGTERM): saved step %d of %d; rerun the same "
                                "command to resume.", step, num_steps)
                break
    finally:
        watchdog.close()
        preempted.close()
        writer.flush()
    return state
