"""The closing lines of a run: headline metrics read back from metrics.jsonl, where the
checkpoints are and what to run next."""

import json

from simclr_jax.config import get_config
from simclr_jax.core import run_report


def test_summary_gives_each_metric_at_its_newest_step_and_the_eval_commands(tmp_path):
    rows = [{"step": 100, "loss": 4.5, "probe_acc": 0.5, "knn_top1": 0.81},
            {"step": 200, "loss": 4.2, "probe_acc": 0.6, "knn_top1": 0.84},
            {"step": 234, "loss": 4.0, "probe_acc": 0.65, "contrast_acc": 0.15}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows)
                                            + '{"step": 23')  # a half-written last line
    (tmp_path / "checkpoints" / "200").mkdir(parents=True)
    (tmp_path / "checkpoints" / "234").mkdir()
    text = run_report.final_summary(str(tmp_path), get_config(), start=200, step=234,
                                    num_steps=234, wall_s=90.0)
    assert text.splitlines() == [
        "pretrain: finished at step 234 of 234 (resumed from step 200); this job trained 34 "
        "steps in 1.5 min; last logged: loss 4, contrast_acc 0.15, probe_acc 0.65, "
        "knn_top1 0.84 (step 200)",
        f"  checkpoints: {tmp_path / 'checkpoints'} (steps 200, 234)",
        "  evaluate it:",
        f"    python -m simclr_jax.linear_eval --config.pretrained={tmp_path} "
        f"--workdir={tmp_path}_linear",
        f"    python -m simclr_jax.knn --config.pretrained={tmp_path} --workdir={tmp_path}_knn"]
    preempted = run_report.final_summary(str(tmp_path), get_config(), start=0, step=200,
                                         num_steps=234, wall_s=60.0)
    assert preempted.splitlines()[-1] == "  rerun the same command to resume"
    assert "stopped (preempted) at step 200 of 234" in preempted
