"""One process of test_multiprocess's one-step comparison (run as a script, not collected).

    python tests/core/multiprocess_step.py --out=F.npz --data_dir=D --resume_step=R \
        [--coordinator_address=H:P --num_processes=N --process_id=I]

Builds the real pretraining pieces (source, model, optimiser, mesh, input pipeline) for the
tiny config below, then records on process 0:
- the global batches of steps 0..R+1 of an uninterrupted input stream, and of steps R, R+1 of a
  stream restarted at R (a resume): global stream positions and the views' pixels;
- from the initial state, the loss, metrics, gradients and updated BN statistics of the batch of
  step 0 and of step 1 (gradients are not reduced further than the step itself reduces them);
- the state after one real jitted train step (train.make_train_step) on the batch of step 0.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

# Mirrors test_multiprocess.FLAGS: the tiny 16 px config the whole-job tests run, but with the
# CPU default's convolutions, whose sharding over processes is ours (cpu/onednn.py: custom
# calls, custom-partitioned). The whole-job tests keep XLA's: custom partitioning gives each
# compiled program a key of its own, so their reruns could not reuse the compilation cache.
CONFIG = dict(image_size=16, width_multiplier=0.125, proj_out_dim=16, batch_size=32,
              learning_rate=0.1, num_train_steps=12, conv_impl="onednn",
              warmup_epochs=0.0)  # so the one real step moves the weights


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--data_dir", required=True)
    parser.add_argument("--resume_step", type=int, default=3)
    parser.add_argument("--coordinator_address")
    parser.add_argument("--num_processes", type=int)
    parser.add_argument("--process_id", type=int)
    args = parser.parse_args()

    from simclr_jax.core import parallel  # before anything starts the XLA backend

    parallel.initialize_distributed(args.coordinator_address, args.num_processes,
                                    args.process_id, timeout_s=120)
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.experimental import multihost_utils

    from simclr_jax.augment import views
    from simclr_jax.augment.recipes import Augmentation
    from simclr_jax.config import get_config
    from simclr_jax.core import train

    config = get_config()
    config.data_dir = args.data_dir
    config.update(CONFIG)
    mesh = parallel.make_mesh()
    parts = train.build_training(config, mesh)
    state0 = jax.device_get(train.init_state_on_mesh(parts.model, parts.tx, config, mesh))

    def global_batches(start_step: int, count: int) -> list[dict]:
        local = train.input_batches(parts.split, config, start_step)
        return [parallel.global_batch(mesh, next(local)) for _ in range(count)]

    R = args.resume_step
    straight = global_batches(0, R + 2)
    resumed = global_batches(R, 2)
    record: dict[str, np.ndarray] = {}

    def keep(prefix: str, tree) -> None:
        for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
            record[prefix + jax.tree_util.keystr(path)] = np.asarray(leaf)

    for name, batches, first in (("straight", straight, 0), ("resumed", resumed, R)):
        for i, batch in enumerate(batches):
            gathered = multihost_utils.process_allgather(
                {k: batch[k] for k in ("position", "view1", "view2")}, tiled=True)
            keep(f"batch/{name}/{first + i}/", gathered)

    rep = parallel.replicated(mesh)

    @jax.jit
    def grads_of(params, stats, batch, step):
        x = views.augment_views(Augmentation.from_config(config), step, batch)
        labels = jnp.repeat(batch["label"], 2)
        return train.loss_and_grads(params, stats, x, labels, model=parts.model, config=config,
                                    mesh=mesh)

    for step in (0, 1):
        params, stats = jax.device_put((state0.params, state0.batch_stats), rep)
        batch = {k: v for k, v in straight[step].items() if k != "position"}
        grads, metrics, new_stats = grads_of(params, stats, batch, jnp.int32(step))
        keep(f"grads/{step}/", grads)
        keep(f"metrics/{step}/", metrics)
        keep(f"batch_stats/{step}/", new_stats)

    step_fn = train.make_train_step(parts.model, parts.tx, parts.schedule, config, mesh)
    new_state, metrics = step_fn(jax.device_put(state0, rep),
                                 {k: v for k, v in straight[0].items() if k != "position"})
    keep("step/state/", {"params": new_state.params, "batch_stats": new_state.batch_stats})
    keep("step/metrics/", metrics)
    if jax.process_index() == 0:
        np.savez(args.out, **record)
    multihost_utils.sync_global_devices("multiprocess_step.done")


if __name__ == "__main__":
    main()
