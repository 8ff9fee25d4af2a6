"""Linear evaluation: a linear classifier on the frozen encoder's h (BN in inference mode).

Training augments with random crop of the full-resolution image + flip (config.train_augment),
the images streamed (evals/classifier.py). With config.cache_features=True, h is computed once
per example (eval preprocessing, no augmentation) and the classifier trains on those cached
features (evals/linear_cached.py): the same result as train_augment=False without a forward pass
of the encoder per step, and hyper-parameter selection over config.hparam_learning_rates /
hparam_weight_decays. The command is simclr_jax/linear_eval.py.
"""

import ml_collections

from simclr_jax.core.train import TrainState
from simclr_jax.errors import UserError
from simclr_jax.evals import classifier, jobs, linear_cached
from simclr_jax.evals.pretrained import Pretrained


def linear_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """`config` with the whole encoder frozen and the classifier reading h."""
    config = ml_collections.ConfigDict(config.to_dict())
    config.fine_tune_after_block = 4
    config.ft_proj_selector = 0
    return config


def train_and_eval(pre: Pretrained, config: ml_collections.ConfigDict, mesh, writer,
                   workdir: str | None = None) -> tuple[dict, TrainState]:
    """Linear evaluation of `pre`: (results, the final train state). With `workdir`, the
    classifier's state is checkpointed and resumed there, and cached features written there."""
    config = linear_config(config)
    splits = jobs.load_splits(config, "linear evaluation")
    # Nothing to train (num_train_steps=0): the checkpoint's classifier on images, as it is.
    if config.cache_features and config.num_train_steps != 0:
        results, state = linear_cached.train_and_eval(pre, config, splits, mesh, writer, workdir)
    else:
        if len(linear_cached.candidates(config)) > 1:
            raise UserError("config.hparam_learning_rates / hparam_weight_decays select on "
                            "cached features: set config.cache_features=True")
        model, state = classifier.train_classifier(pre, config, splits.train, mesh, writer,
                                                   workdir=workdir)
        metrics = classifier.eval_classifier(model, state, config, splits.test, mesh)
        results = {"top1": metrics["top1"], "top5": metrics["top5"],
                   "eval_loss": metrics["loss"], "num_eval_examples": metrics["num_examples"],
                   "num_train_examples": jobs.num_train_examples(splits),
                   "train_steps": int(state.step)}
    writer.write_scalars(int(state.step), {
        "top1": results["top1"], "top5": results["top5"], "eval_loss": results["eval_loss"],
        "checkpoint_step": pre.step})
    return results, state


def evaluate(pre: Pretrained, config: ml_collections.ConfigDict, mesh, writer,
             workdir: str | None = None) -> dict:
    """jobs.EvaluateFn of this job."""
    return train_and_eval(pre, config, mesh, writer, workdir)[0]


def run(config: ml_collections.ConfigDict, workdir: str, *, wait: bool = False,
        wait_timeout_s: float = 3600.0) -> dict:
    """The linear evaluation job (library entry point)."""
    return jobs.run_job("linear_eval", config, workdir, evaluate, wait=wait,
                        wait_timeout_s=wait_timeout_s)
