"""What a pretraining run tells its user at the end: a short summary (steps, wall time, final
metrics, where the checkpoints are) and the commands that evaluate it; and, on the rerun of a
finished run, that there is nothing left to train."""

import ml_collections

from simclr_jax.core import checkpointing, metric_io

# Eval config files of the paper's protocols for the datasets that have one (configs/).
_LINEAR_CONFIGS = {"cifar10": "configs/linear_eval_cifar10.py",
                   "imagenet2012": "configs/linear_eval_imagenet.py"}
_HEADLINE = ("loss", "contrast_acc", "probe_acc", "knn_top1")


def eval_commands(workdir: str, config: ml_collections.ConfigDict) -> list[str]:
    """The linear-evaluation and kNN commands for a pretraining workdir."""
    base = workdir.rstrip("/")
    linear_config = _LINEAR_CONFIGS.get(config.dataset)
    linear = ("python -m simclr_jax.linear_eval "
              + (f"--config={linear_config} " if linear_config else "")
              + f"--config.pretrained={base} --workdir={base}_linear")
    knn = f"python -m simclr_jax.knn --config.pretrained={base} --workdir={base}_knn"
    return [linear, knn]


def _metrics(workdir: str) -> str:
    """The newest logged value of each headline metric (read back from metrics.jsonl); one
    logged less often than the loss (the kNN monitor) names its step."""
    rows = metric_io.read_rows(workdir)
    last = [r for r in rows if "loss" in r]
    if not last:
        return "no metrics logged"
    parts = []
    for key in _HEADLINE:
        if row := next((r for r in reversed(rows) if key in r), None):
            at = f" (step {row['step']})" if row["step"] != last[-1]["step"] else ""
            parts.append(f"{key} {row[key]:.4g}{at}")
    return ", ".join(parts)


def _next(workdir: str, config: ml_collections.ConfigDict) -> list[str]:
    return ["  evaluate it:", *(f"    {c}" for c in eval_commands(workdir, config))]


def already_complete(workdir: str, config: ml_collections.ConfigDict, step: int,
                     num_steps: int) -> str:
    """The message of a rerun that finds the run finished (step >= the config's last step)."""
    what = (f"step {step} of {num_steps}" if step == num_steps else
            f"checkpoint step {step}, past this config's {num_steps} steps")
    lines = [f"pretrain: the run in {workdir} is already complete ({what}; "
             f"{_metrics(workdir)}). Nothing to train: raise config.num_train_steps or "
             f"config.num_epochs to extend it.",
             f"  checkpoints: {checkpointing.checkpoint_dir(workdir)}", *_next(workdir, config)]
    return "\n".join(lines)


def final_summary(workdir: str, config: ml_collections.ConfigDict, *, start: int, step: int,
                  num_steps: int, wall_s: float) -> str:
    """The closing lines of a run that trained (to the end, or until a preemption notice)."""
    root = checkpointing.checkpoint_dir(workdir)
    steps = checkpointing.finished_steps(root)
    resumed = f" (resumed from step {start})" if start else ""
    done = "finished" if step >= num_steps else "stopped (preempted)"
    lines = [f"pretrain: {done} at step {step} of {num_steps}{resumed}; this job trained "
             f"{step - start} steps in {wall_s / 60:.1f} min; last logged: "
             f"{_metrics(workdir)}",
             f"  checkpoints: {root} (steps {', '.join(map(str, steps)) or 'none'})"]
    if step >= num_steps:
        lines += _next(workdir, config)
    else:
        lines.append("  rerun the same command to resume")
    return "\n".join(lines)
