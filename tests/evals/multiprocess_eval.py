"""One process of test_multiprocess_eval (run as a script, not collected).

    python tests/evals/multiprocess_eval.py --out=F.npz --data_dir=D --pretrained=RUN \
        --resume_step=R [--coordinator_address=H:P --num_processes=N --process_id=I]

The evaluation jobs' real pieces on the digits and a pretraining run's encoder, recorded on
process 0:
- kNN on the streamed splits (TFRecord shards per process): every example's h in example
  order (from the device-sharded banks), knn_top1 / knn_top5 of the sharded scoring;
- linear eval / fine-tuning input (random-access digits): the global batches of steps 0..R+1
  of the training stream, and of steps R, R+1 of a stream restarted at R (a resume);
- fine-tuning's first update from the same state on the batch of step 0: loss, gradients and
  updated BN statistics, and the state after one real jitted classifier step.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--data_dir", required=True)
    parser.add_argument("--pretrained", required=True)
    parser.add_argument("--resume_step", type=int, default=3)
    parser.add_argument("--coordinator_address")
    parser.add_argument("--num_processes", type=int)
    parser.add_argument("--process_id", type=int)
    args = parser.parse_args()

    from simclr_jax.core import parallel  # before anything starts the XLA backend

    parallel.initialize_distributed(args.coordinator_address, args.num_processes,
                                    args.process_id, timeout_s=120)
    from functools import partial

    import jax
    import numpy as np
    import optax
    from jax.experimental import multihost_utils

    from simclr_jax import eval_config
    from simclr_jax.data import eval_input
    from simclr_jax.evals import classifier, features, jobs, pretrained, weighted_knn

    mesh = parallel.make_mesh()
    # The CPU default convolutions (the session's run was trained on XLA's): their features do
    # not depend on how the batch is split (measured: bitwise), so neither do the kNN ranks.
    pre = pretrained.load(args.pretrained, mesh=mesh, architecture={"conv_impl": "winograd"})
    config = eval_config.get_config("finetune")
    config.data_dir = args.data_dir
    config = jobs.resolve_config(config, pre.config)
    config.update(dict(batch_size=32, eval_batch_size=32, label_fraction=1.0,
                       num_train_steps=12, learning_rate=0.1,
                       zero_init_classifier=False))  # so gradients reach the encoder
    record: dict[str, np.ndarray] = {}

    def keep(prefix: str, tree) -> None:
        for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
            record[prefix + jax.tree_util.keystr(path)] = np.asarray(leaf)

    def everywhere(x):  # a global array's full value on every process (test-sized only)
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))

    # kNN, streamed: each process reads its TFRecord shard.
    config.data_mode = "stream"
    splits = jobs.load_splits(config, "kNN")
    banks = {}
    for name, source in (("train", splits.train_eval), ("test", splits.test)):
        bank = features.compute(pre, source, image_size=8, global_batch=32, mesh=mesh)
        assert bank.features.addressable_shards[0].data.shape[1] == 32 // jax.device_count()
        flat = bank.index.reshape(-1)
        h = everywhere(bank.features).reshape(len(flat), -1)
        labels = everywhere(bank.labels).reshape(-1)
        order = np.argsort(np.where(flat >= 0, flat, len(flat) + 1))[:bank.num_examples]
        record[f"features/{name}"], record[f"labels/{name}"] = h[order], labels[order]
        banks[name] = bank
    metrics = weighted_knn.bank_metrics(banks["train"], banks["test"], k=config.knn_k,
                                        temperature=config.knn_temperature, mesh=mesh)
    record["knn/top1"] = np.float64(metrics["knn_top1"])
    record["knn/top5"] = np.float64(metrics["knn_top5"])

    # Training input of linear eval and fine-tuning (random access: same global batches).
    config.data_mode = "memory"
    splits = jobs.load_splits(config, "fine-tuning")
    R = args.resume_step

    def global_batches(start_step: int, count: int) -> list[dict]:
        local = eval_input.train_batches(
            splits.train, seed=config.seed, global_batch=32, image_size=8,
            crop_area_min=config.crop_area_min, start_step=start_step,
            process_index=jax.process_index(), process_count=jax.process_count())
        return [parallel.global_batch(mesh, next(local)) for _ in range(count)]

    straight, resumed = global_batches(0, R + 2), global_batches(R, 2)
    for name, batches, first in (("straight", straight, 0), ("resumed", resumed, R)):
        for i, batch in enumerate(batches):
            keep(f"batch/{name}/{first + i}/", {k: everywhere(v) for k, v in batch.items()})

    # Fine-tuning's first update (cross-replica BN in the trainable blocks).
    model, variables = classifier.build_classifier(pre, config, splits.train.num_classes, mesh)
    batch = {k: v for k, v in straight[0].items() if k != "position"}

    @jax.jit
    def grads_of(params, batch_stats, batch):
        def loss_fn(p):
            logits, updates = model.apply({"params": p, "batch_stats": batch_stats},
                                          batch["image"], train=True, mutable=["batch_stats"])
            loss = optax.softmax_cross_entropy_with_integer_labels(logits,
                                                                   batch["label"]).mean()
            return loss, updates["batch_stats"]

        return jax.value_and_grad(loss_fn, has_aux=True)(params)

    # Compiled ahead and met at a barrier: gloo gives up on a peer that is still compiling.
    grads_of.lower(variables["params"], variables["batch_stats"], batch).compile()
    multihost_utils.sync_global_devices("multiprocess_eval.compiled")
    (loss, stats), grads = grads_of(variables["params"], variables["batch_stats"], batch)
    keep("update/loss", loss)
    keep("update/grads/", grads)
    keep("update/batch_stats/", stats)
    tx = classifier.build_tx(config, optax.constant_schedule(0.1), classifier.trainable_mask(
        variables["params"], config.fine_tune_after_block, config.ft_proj_selector))
    state = jax.jit(lambda v: classifier.TrainState(
        step=jax.numpy.zeros((), jax.numpy.int32), params=v["params"],
        batch_stats=v["batch_stats"], opt_state=tx.init(v["params"])),
        out_shardings=parallel.replicated(mesh))(variables)
    step_fn = jax.jit(partial(classifier.train_step, model=model, tx=tx,
                              schedule=optax.constant_schedule(0.1)),
                      out_shardings=parallel.replicated(mesh))
    step_fn.lower(state, batch).compile()
    multihost_utils.sync_global_devices("multiprocess_eval.step_compiled")
    new_state, step_metrics = step_fn(state, batch)
    keep("step/params/", new_state.params)
    keep("step/metrics/", step_metrics)
    if jax.process_index() == 0:
        np.savez(args.out, **record)
    multihost_utils.sync_global_devices("multiprocess_eval.done")


if __name__ == "__main__":
    main()
