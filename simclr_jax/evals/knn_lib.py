"""The kNN job (command: simclr_jax/knn.py): weighted kNN accuracy of a pretrained encoder's h,
no training; the maths are evals/weighted_knn.py."""

import ml_collections

from simclr_jax.evals import jobs, weighted_knn
from simclr_jax.evals.pretrained import Pretrained


def evaluate(pre: Pretrained, config: ml_collections.ConfigDict, mesh, writer,
             workdir: str | None = None) -> dict:
    """jobs.EvaluateFn of the kNN job: one metrics row at the checkpoint's step (with
    config.cache_features, the features are cached in `workdir` as linear evaluation does)."""
    splits = jobs.load_splits(config, "kNN evaluation", bank=True)
    caches = ((jobs.feature_cache(workdir, config, pre, "train"),
               jobs.feature_cache(workdir, config, pre, "eval"))
              if config.cache_features else (None, None))
    results = weighted_knn.knn_eval(pre, splits.train_eval, splits.test,
                                    image_size=config.image_size, k=config.knn_k,
                                    temperature=config.knn_temperature,
                                    global_batch=config.eval_batch_size, mesh=mesh,
                                    caches=caches)
    writer.write_scalars(pre.step, {"knn_top1": results["knn_top1"],
                                    "knn_top5": results["knn_top5"]})
    return {**results, "num_train_examples": jobs.num_train_examples(splits)}


def run(config: ml_collections.ConfigDict, workdir: str, *, wait: bool = False,
        wait_timeout_s: float = 3600.0) -> dict:
    """The kNN job (library entry point)."""
    return jobs.run_job("knn", config, workdir, evaluate, wait=wait,
                        wait_timeout_s=wait_timeout_s)
