"""Fine-tuning: the classifier on h (or on a projection-head layer), the encoder trainable after
`fine_tune_after_block`, on all or a fraction of the labels (evals/classifier.py does the
training, streamed, checkpointed and resumable; the command is simclr_jax/finetune.py)."""

import ml_collections

from simclr_jax.evals import classifier, jobs
from simclr_jax.evals.pretrained import Pretrained


def evaluate(pre: Pretrained, config: ml_collections.ConfigDict, mesh, writer,
             workdir: str | None = None) -> dict:
    """Fine-tunes from `pre` and evaluates on config.eval_split."""
    splits = jobs.load_splits(config, "fine-tuning")
    model, state = classifier.train_classifier(pre, config, splits.train, mesh, writer,
                                               workdir=workdir)
    metrics = classifier.eval_classifier(model, state, config, splits.test, mesh)
    writer.write_scalars(int(state.step), {
        "top1": metrics["top1"], "top5": metrics["top5"], "eval_loss": metrics["loss"],
        "checkpoint_step": pre.step})
    return {"top1": metrics["top1"], "top5": metrics["top5"], "eval_loss": metrics["loss"],
            "num_eval_examples": metrics["num_examples"],
            "num_train_examples": jobs.num_train_examples(splits),
            "label_fraction": config.label_fraction, "train_steps": int(state.step)}


def run(config: ml_collections.ConfigDict, workdir: str, *, wait: bool = False,
        wait_timeout_s: float = 3600.0) -> dict:
    """The fine-tuning job (library entry point)."""
    return jobs.run_job("finetune", config, workdir, evaluate, wait=wait,
                        wait_timeout_s=wait_timeout_s,
                        with_head=config.ft_proj_selector > 0)
