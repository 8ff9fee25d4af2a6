"""Evaluation jobs end to end: linear eval (frozen encoder), fine-tune, kNN, --wait, bad input."""

import json
import os
import shutil
import threading
import time
from pathlib import Path

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds
from clu import metric_writers

from simclr_jax.core import parallel
from simclr_jax.errors import UserError
from simclr_jax.evals import (
    classifier,
    finetune_lib,
    jobs,
    knn_lib,
    linear_eval_lib,
    pretrained,
    weighted_knn,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def run(pretrained_run) -> str:
    return pretrained_run


def _leaves(tree) -> dict[str, np.ndarray]:
    return {jax.tree_util.keystr(path): np.asarray(leaf)
            for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def _changed(before, after) -> dict[str, bool]:
    a, b = _leaves(before), _leaves(after)
    assert a.keys() == b.keys()
    return {k: not np.array_equal(a[k], b[k]) for k in a}


@pytest.fixture
def setup(run, tiny_eval_config):
    """setup(job, with_head=False, **overrides) -> (pretrained, resolved config, mesh, writer)
    for calling a job's library functions directly on the session's pretraining run."""

    def make(job, with_head=False, **overrides):
        pre = pretrained.load(run, with_head=with_head)
        config = jobs.resolve_config(tiny_eval_config(run, job, **overrides), pre.config)
        return pre, config, parallel.make_mesh(), metric_writers.MultiWriter([])

    return make


@pytest.mark.slow(18)
def test_linear_eval_cli_end_to_end_on_one_device(run, tmp_path, run_job, metric_rows):
    """The job as a user runs it: 1 device reading the 8-device run; results, metrics, summary."""
    out = tmp_path / "lin"
    relative = os.path.relpath(run, ROOT)  # as typed in a shell: relative to the cwd (ROOT)
    result = run_job("linear_eval", f"--workdir={out}", f"--config.pretrained={relative}",
                     "--config.num_train_steps=6", "--config.batch_size=32",
                     "--config.eval_batch_size=64", "--config.log_every_steps=3")
    assert result.returncode == 0, result.stderr[-3000:]
    doc = json.loads((out / "results.json").read_text())
    assert doc["job"] == "linear_eval" and doc["checkpoint_step"] == 4
    assert doc["pretrained"].endswith("checkpoints/4")
    assert 0 <= doc["top1"] <= doc["top5"] <= 1 and doc["train_steps"] == 6
    assert doc["num_eval_examples"] == 300  # digits' test split, every example exactly once
    assert doc["config"]["dataset"] == "sklearn_digits"  # inherited from the pretraining run
    assert doc["config"]["pretrained"] == relative and len(doc["history"]) == 1
    summary = [line for line in result.stdout.splitlines() if line.startswith("linear_eval:")]
    assert len(summary) == 1 and "step 4 top1=" in summary[0]
    logged = metric_rows(out)
    assert [r["step"] for r in logged if "train_loss" in r] == [3, 6]
    assert logged[-1]["top1"] == doc["top1"] and logged[-1]["checkpoint_step"] == 4


@pytest.mark.slow(20)
def test_linear_eval_keeps_the_encoder_bitwise_frozen(run, setup):
    pre, config, mesh, writer = setup("linear_eval")  # augmented, through the encoder
    _, state = linear_eval_lib.train_and_eval(pre, config, mesh, writer)
    assert int(state.step) == 6
    assert not any(_changed(pre.variables["params"], state.params["encoder"]).values())
    assert not any(_changed(pre.variables["batch_stats"], state.batch_stats["encoder"]).values())
    assert np.any(np.asarray(state.params["classifier"]["kernel"]) != 0)  # and it did train


@pytest.mark.slow(27)
def test_cached_features_train_the_same_classifier_as_unaugmented_training(run, setup):
    pre, config, mesh, writer = setup("linear_eval", train_augment=False,
                                       zero_init_classifier=False)
    direct, direct_state = linear_eval_lib.train_and_eval(pre, config, mesh, writer)
    config.cache_features = True
    cached, cached_state = linear_eval_lib.train_and_eval(pre, config, mesh, writer)
    for a, b in zip(jax.tree_util.tree_leaves(direct_state.params["classifier"]),
                    jax.tree_util.tree_leaves(cached_state.params["classifier"]), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)
    assert abs(direct["top1"] - cached["top1"]) <= 1 / direct["num_eval_examples"]


def test_finetune_changes_the_encoder_and_freezes_blocks_up_to_fine_tune_after_block(run, setup):
    pre, config, mesh, writer = setup("finetune", label_fraction=1.0,
                                       fine_tune_after_block=2)
    splits = jobs.load_splits(config, "fine-tuning")
    _, state = classifier.train_classifier(pre, config, splits.train, mesh, writer)
    changed = _changed(pre.variables["params"], state.params["encoder"])
    frozen = {k: v for k, v in changed.items()
              if k.startswith(("['stem", "['block1_", "['block2_"))}
    assert frozen and not any(frozen.values())  # bitwise as restored
    trained = {k: v for k, v in changed.items() if k not in frozen}
    # Both trainable block groups change (a float32 scale near 1 may round a tiny step away).
    assert any(v for k, v in trained.items() if k.startswith("['block3_"))
    assert any(v for k, v in trained.items() if k.startswith("['block4_"))
    assert sum(trained.values()) >= 0.9 * len(trained)


@pytest.mark.parametrize("frozen_bn", ["batch_stats", "inference"])
def test_frozen_stages_bn_statistics_as_configured(run, setup, frozen_bn):
    """fine_tune_after_block=2: the frozen stages' BN runs on batch statistics and updates its
    moving averages as the official TF1 code does ('batch_stats'), or keeps the pretrained
    ones ('inference'); the trained stages update theirs either way."""
    pre, config, mesh, writer = setup("finetune", label_fraction=1.0, fine_tune_after_block=2,
                                       frozen_bn=frozen_bn, num_train_steps=2)
    splits = jobs.load_splits(config, "fine-tuning")
    _, state = classifier.train_classifier(pre, config, splits.train, mesh, writer)
    changed = _changed(pre.variables["batch_stats"], state.batch_stats["encoder"])
    frozen = [v for k, v in changed.items() if k.startswith(("['stem", "['block1_", "['block2_"))]
    trained = [v for k, v in changed.items() if k.startswith(("['block3_", "['block4_"))]
    assert frozen and trained and all(trained)
    assert all(frozen) if frozen_bn == "batch_stats" else not any(frozen)


def test_lars_fine_tuning_decays_the_classifier_without_trust_ratio(run, setup):
    """The official LARS excludes head_supervised (our classifier) from the trust ratio and
    from its own decay, and decays its kernel through an L2 term instead: its first update is
    momentum SGD at the full rate, -lr (g + wd w); the encoder's kernels are trust-scaled."""
    pre, config, mesh, _ = setup("finetune", optimizer="lars", weight_decay=0.1,
                                 zero_init_classifier=False)
    _, variables = classifier.build_classifier(pre, config, 10, mesh)
    params = jax.device_get(variables["params"])
    mask = classifier.trainable_mask(params, config.fine_tune_after_block, 0)
    lr = 0.3
    tx = classifier.build_tx(config, lambda step: lr, mask)
    grads = jax.tree_util.tree_map(lambda p: np.full(p.shape, 0.01, np.float32), params)
    updates = jax.device_get(tx.update(grads, tx.init(params), params)[0])
    w, g = params["classifier"]["kernel"], grads["classifier"]["kernel"]
    np.testing.assert_allclose(updates["classifier"]["kernel"], -lr * (g + 0.1 * w), rtol=1e-5)
    np.testing.assert_allclose(updates["classifier"]["bias"], -lr * grads["classifier"]["bias"],
                               rtol=1e-6)
    w, g = params["encoder"]["block3_0"]["conv1"]["kernel"], 0.01
    g_dec = g + 0.1 * w
    trust = 0.001 * np.linalg.norm(w) / np.linalg.norm(g_dec)
    np.testing.assert_allclose(updates["encoder"]["block3_0"]["conv1"]["kernel"],
                               -lr * trust * g_dec, rtol=1e-4)


def test_the_probe_evaluated_as_it_is_equals_the_monitor_probe_eval(run, tmp_path, metric_rows,
                                                                    tiny_eval_config):
    """The online probe's eval-split top-1, logged by the pretraining monitor (as the TF2
    code's eval/label_top_1_accuracy), equals linear evaluation of the checkpoint's own probe
    without training (classifier_from_probe, num_train_steps=0): two independent paths."""
    logged = {r["step"]: r for r in metric_rows(run) if "probe_eval_top1" in r}
    assert sorted(logged) == [2, 4]
    config = tiny_eval_config(run, classifier_from_probe=True, num_train_steps=0)
    results = linear_eval_lib.run(config, str(tmp_path))
    assert results["train_steps"] == 0 and results["num_train_examples"] == 0
    assert results["top1"] == pytest.approx(logged[4]["probe_eval_top1"], abs=1e-6)
    assert results["top5"] == pytest.approx(logged[4]["probe_eval_top5"], abs=1e-6)
    config.num_train_steps = 0
    config.classifier_from_probe = False
    with pytest.raises(UserError, match="config.num_train_steps: 0 .no training. needs "
                       "config.classifier_from_probe=True"):
        linear_eval_lib.run(config, str(tmp_path / "bad"))


@pytest.mark.slow(25)
def test_finetune_job_on_a_label_fraction_from_a_head_layer(run, tmp_path, tiny_eval_config, setup):
    config = tiny_eval_config(run, "finetune", label_fraction=0.1, ft_proj_selector=1)
    results = finetune_lib.run(config, str(tmp_path))
    assert results["num_train_examples"] == round(0.1 * 1497)  # digits: 1497 train, 300 test
    assert results["label_fraction"] == 0.1 and results["num_eval_examples"] == 300
    assert json.loads((tmp_path / "results.json").read_text())["top1"] == results["top1"]
    pre, config, mesh, writer = setup("finetune", with_head=True, ft_proj_selector=1)
    # The classifier reads the output of the pretrained head's first layer: with an identity
    # classifier, its logits are exactly g's layer-1 output of the pretrained h.
    x = np.random.default_rng(0).integers(0, 256, (4, 8, 8, 3)).astype(np.uint8)
    h = pre.module.apply(pre.variables, x.astype(np.float32) / 255.0, train=False)
    layer1 = np.asarray(pre.head.apply(pre.head_variables, h, train=False)[1])
    width = layer1.shape[-1]
    model, variables = classifier.build_classifier(pre, config, width, mesh)
    assert set(variables["params"]) == {"encoder", "head", "classifier"}
    variables["params"]["classifier"] = {"kernel": np.eye(width, dtype=np.float32),
                                         "bias": np.zeros(width, np.float32)}
    np.testing.assert_allclose(np.asarray(model.apply(variables, x, train=False)), layer1,
                               rtol=1e-5, atol=1e-5)
    config.ft_proj_selector = 9
    with pytest.raises(UserError, match="ft_proj_selector=9 but the pretrained head has"):
        classifier.build_classifier(pre, config, width, mesh)


def _brute_force_knn(bank, bank_labels, queries, labels, num_classes, k, temperature):
    """Independent float64 numpy kNN: (top-1, top-5) accuracy and the class scores."""
    bank = bank / np.linalg.norm(bank, axis=1, keepdims=True)
    queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    top1 = top5 = 0
    all_scores = []
    for q, y in zip(queries.astype(np.float64), labels, strict=True):
        sims = bank.astype(np.float64) @ q
        scores = np.zeros(num_classes)
        for j in np.argsort(-sims, kind="stable")[:k]:
            scores[bank_labels[j]] += np.exp(sims[j] / temperature)
        ranking = np.argsort(-scores, kind="stable")  # ties: lower class first, as top_k
        top1 += ranking[0] == y
        top5 += y in ranking[:5]
        all_scores.append(scores)
    return top1 / len(labels), top5 / len(labels), np.stack(all_scores)


@pytest.mark.parametrize("k", [1, 7, 200])
def test_knn_matches_a_brute_force_numpy_implementation(k):
    rng = np.random.default_rng(k)
    centres = rng.normal(size=(8, 16))
    bank_labels = rng.integers(0, 8, 150).astype(np.int32)
    labels = rng.integers(0, 8, 37).astype(np.int32)  # 37: the last batch of 16 is padded
    bank = (centres[bank_labels] + 1.5 * rng.normal(size=(150, 16))).astype(np.float32)
    queries = (centres[labels] + 1.5 * rng.normal(size=(37, 16))).astype(np.float32)
    got = weighted_knn.knn_metrics(bank, bank_labels, queries, labels, num_classes=8, k=k,
                                   temperature=0.1, global_batch=16, mesh=parallel.make_mesh())
    top1, top5, scores = _brute_force_knn(bank, bank_labels, queries, labels, 8, k, 0.1)
    assert got["num_eval_examples"] == 37
    assert got["knn_top1"] == pytest.approx(top1, abs=1e-9)
    assert got["knn_top5"] == pytest.approx(top5, abs=1e-9)
    assert 0.2 < top1 < 1  # neither trivial nor chance
    np.testing.assert_allclose(
        np.asarray(weighted_knn.knn_scores(queries, bank, bank_labels, num_classes=8, k=k,
                                           temperature=0.1)), scores, rtol=2e-4)


def _copy_step(run: str, dest: Path, step: int) -> None:
    """Publishes a finished step directory atomically, as Orbax does."""
    shutil.copytree(Path(run) / "checkpoints" / str(step), dest / f"{step}.partial")
    (dest / f"{step}.partial").rename(dest / str(step))


def test_knn_wait_mode_evaluates_each_new_checkpoint_until_the_final_one(run, tmp_path,
                                                                         tiny_eval_config,
                                                                         metric_rows):
    growing, out = tmp_path / "growing", tmp_path / "knn"
    (growing / "checkpoints").mkdir(parents=True)

    def pretraining():  # step 2 appears; step 4 only once step 2 has been evaluated
        time.sleep(1)
        _copy_step(run, growing / "checkpoints", 2)
        deadline = time.time() + 300
        while not (out / "results.json").exists() and time.time() < deadline:
            time.sleep(0.2)
        _copy_step(run, growing / "checkpoints", 4)

    thread = threading.Thread(target=pretraining)
    thread.start()
    try:
        results = knn_lib.run(tiny_eval_config(str(growing), "knn"), str(out), wait=True,
                              wait_timeout_s=120)
    finally:
        thread.join()
    doc = json.loads((out / "results.json").read_text())
    assert [h["checkpoint_step"] for h in doc["history"]] == [2, 4]
    assert results["checkpoint_step"] == 4 and doc["knn_top1"] == results["knn_top1"]
    assert [r["step"] for r in metric_rows(out) if "knn_top1" in r] == [2, 4]
    # Nothing appears at all: one clear error after the timeout.
    with pytest.raises(UserError, match="no checkpoint appeared"):
        list(jobs.checkpoints(str(tmp_path / "empty"), True, timeout_s=0.5, poll_s=0.1))


def test_knn_monitor_inside_pretraining_equals_the_knn_job(run, tmp_path, tiny_eval_config,
                                                           metric_rows):
    logged = {r["step"]: r for r in metric_rows(run) if "knn_top1" in r}  # knn_every_steps=2
    assert sorted(logged) == [2, 4]
    job = knn_lib.run(tiny_eval_config(run, "knn"), str(tmp_path))
    assert job["checkpoint_step"] == 4
    assert job["knn_top1"] == pytest.approx(logged[4]["knn_top1"], abs=1e-6)
    assert job["knn_top5"] == pytest.approx(logged[4]["knn_top5"], abs=1e-6)


class UnlabelledTiny(tfds.core.GeneratorBasedBuilder):
    """16 random 8x8 images, no label feature."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(
            {"image": tfds.features.Image(shape=(8, 8, 3))}))

    def _split_generators(self, dl_manager):
        del dl_manager
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        for i in range(16):
            image = np.random.default_rng(i).integers(0, 256, (8, 8, 3), dtype=np.uint8)
            yield i, {"image": image}


@pytest.mark.parametrize("job,name", [(linear_eval_lib, "linear_eval"),
                                      (finetune_lib, "finetune"), (knn_lib, "knn")])
def test_a_dataset_without_labels_is_one_clear_error(run, tmp_path_factory, job, name,
                                                     tiny_eval_config):
    data_dir = str(tmp_path_factory.getbasetemp() / "unlabelled")
    tfds.builder("unlabelled_tiny", data_dir=data_dir).download_and_prepare()
    config = tiny_eval_config(run, name, dataset="unlabelled_tiny", data_dir=data_dir,
                              train_split="train", eval_split="train", label_fraction=1.0)
    with pytest.raises(UserError, match="'train' of dataset 'unlabelled_tiny' has no labels"):
        job.run(config, str(tmp_path_factory.mktemp(name)))


@pytest.mark.parametrize("flags,message", [
    (["--config.label_fraction=1.5"], "config.label_fraction: must be in (0, 1], got 1.5"),
    (["--config.pretrained={empty}"], "holds no finished checkpoint (config.pretrained)"),
    (["--config.width_multiplier=0.25"], "is not the expected architecture"),
])
def test_bad_input_ends_the_job_with_one_error_line(run, tmp_path, flags, message, run_job,
                                                    error_lines):
    (tmp_path / "empty" / "checkpoints").mkdir(parents=True)
    flags = [f.format(empty=tmp_path / "empty") for f in flags]
    if not any(f.startswith("--config.pretrained=") for f in flags):
        flags.append(f"--config.pretrained={run}")
    result = run_job("finetune", f"--workdir={tmp_path / 'out'}", *flags)
    assert result.returncode == 2, result.stderr[-3000:]
    errors = error_lines(result)
    assert len(errors) == 1 and message in errors[0], errors


@pytest.mark.parametrize("job,overrides,message", [
    (knn_lib, {"eval_split": "nosuch"},
     "split 'nosuch' of dataset 'sklearn_digits' does not exist"),
    (linear_eval_lib, {"hparam_learning_rates": (0.1, 1.0)},
     "select on cached features: set config.cache_features=True"),
])
def test_more_bad_input_is_one_user_error(run, tmp_path, tiny_eval_config, job, overrides,
                                          message):
    """In-process (the CLI turning a UserError into one line and exit 2 is proven above)."""
    name = "knn" if job is knn_lib else "linear_eval"
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        job.run(tiny_eval_config(run, name, **overrides), str(tmp_path / "out"))
def test_eval_batch_not_divisible_by_the_devices_names_its_key(run, tmp_path, tiny_eval_config):
    """On main the message named config.batch_size for the eval batch."""
    with pytest.raises(UserError, match=r"global batch size 12 \(config.eval_batch_size\) is "
                       r"not divisible by the 8 devices; use a multiple of 8, e.g. 8 or 16"):
        knn_lib.run(tiny_eval_config(run, "knn", eval_batch_size=12), str(tmp_path))


def test_linear_eval_reads_an_image_folder(tmp_path, tfds_dir, run, labelled_folder,
                                           tiny_eval_config):
    """A digits-pretrained encoder evaluated on a labelled folder's train / val splits."""
    root = labelled_folder(tmp_path / "folder")
    config = tiny_eval_config(run, dataset=f"folder:{root}", data_dir=tfds_dir,
                              train_split="train", eval_split="val", batch_size=8,
                              eval_batch_size=8)
    results = linear_eval_lib.run(config, str(tmp_path / "lin"))
    doc = json.loads((tmp_path / "lin" / "results.json").read_text())
    assert doc["num_eval_examples"] == 4 and 0 <= results["top1"] <= 1

