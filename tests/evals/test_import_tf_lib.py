"""Importing official SimCLR checkpoints: a TF1 reference network written from the official code
(tests/evals/conftest.py), random weights, saved the TF1 way, gives the same h, z and logits in
our Flax model as in TF; the eval jobs read the imported checkpoint; bad checkpoints are one
clear error."""

import json

import numpy as np
import pytest

from simclr_jax import downstream
from simclr_jax.data import eval_input
from simclr_jax.errors import UserError
from simclr_jax.evals import finetune_lib, import_tf_lib, jobs, knn_lib, linear_eval_lib, pretrained

DIGITS = dict(dataset="sklearn_digits", train_split="train", eval_split="test")


def rel_diff(ours: np.ndarray, tf: np.ndarray) -> float:
    """max |ours - tf| / max |tf|."""
    return float(np.max(np.abs(np.asarray(ours) - tf)) / np.max(np.abs(tf)))


def test_reference_network_has_the_official_names_and_shapes(tf1_reference, official_listing):
    """The reference's naming is the official code's: the real R18 checkpoint's 191 variables
    (with Momentum slots and global_step), and the official R50-SK graph's, in order."""
    r18 = tf1_reference(None, depth=18, width=1.0, cifar_stem=True, image_size=32, ops=False)
    assert r18.names == official_listing("tf1_r18_cifar10_pretrain.tsv")
    r50 = tf1_reference(None, depth=50, width=1.0, cifar_stem=False, image_size=224,
                        sk_ratio=0.0625, num_classes=10, ops=False)
    network = [(k, v) for k, v in r50.names.items() if "Momentum" not in k and k != "global_step"]
    assert network == list(official_listing("tf1_r50_1x_sk1_finetune.tsv").items())


NETWORKS = {  # tiny widths so each runs in seconds; even sizes: every strided conv pads
    "r18_cifar": dict(depth=18, width=0.125, cifar_stem=True, image_size=16, num_classes=10),
    "r50_se": dict(depth=50, width=0.0625, cifar_stem=False, image_size=32, se_ratio=0.25,
                   num_classes=5),
    "r50_sk_ema": dict(depth=50, width=0.0625, cifar_stem=False, image_size=32,
                       sk_ratio=0.0625, num_proj_layers=2, proj_out_dim=16, ema=True),
}


@pytest.mark.parametrize("name", NETWORKS)
@pytest.mark.slow(17)
def test_imported_network_computes_what_tf_computes(name, tmp_path, tf1_reference):
    kw = NETWORKS[name]
    ref = tf1_reference(tmp_path / "tf", **kw)
    summary = import_tf_lib.import_checkpoint(str(tmp_path / "tf"), str(tmp_path / "ours"))
    assert summary["format"] == "tf1" and summary["global_step"] == 1234
    a = summary["architecture"]
    assert (a["depth"], a["width_multiplier"], a["sk_ratio"], a["se_ratio"], a["cifar_stem"],
            a["num_classes"]) == (kw["depth"], kw["width"], kw.get("sk_ratio", 0.0),
                                  kw.get("se_ratio", 0.0), kw["cifar_stem"],
                                  kw.get("num_classes", 0))
    enc = downstream.load_encoder(str(tmp_path / "ours"))
    assert enc.step == 1234
    h = enc.module.apply(enc.variables, ref.images, train=False)
    assert rel_diff(h, ref.h) <= 1e-4
    pre = pretrained.load(str(tmp_path / "ours"), with_head=True,
                          with_probe=bool(kw.get("num_classes")))
    z = pre.head.apply(pre.head_variables, h, train=False)[-1]
    assert rel_diff(z, ref.z) <= 1e-4
    if kw.get("num_classes"):
        probe = pre.probe_variables
        logits = np.asarray(h) @ np.asarray(probe["kernel"]) + np.asarray(probe["bias"])
        assert rel_diff(logits, ref.logits) <= 1e-4
    if kw.get("ema"):  # --ema: the ema_model/ copy (other weights, other h)
        import_tf_lib.import_checkpoint(str(tmp_path / "tf"), str(tmp_path / "ema"), ema=True)
        ema = downstream.load_encoder(str(tmp_path / "ema"))
        ema_h = ema.module.apply(ema.variables, ref.images, train=False)
        assert rel_diff(ema_h, ref.ema_h) <= 1e-4 and rel_diff(ema_h, ref.h) > 0.01


@pytest.mark.slow(48)
def test_eval_jobs_read_the_imported_checkpoint(tmp_path, tfds_dir, tf1_reference,
                                                tiny_eval_config):
    """The official head_supervised, evaluated as it is (classifier_from_probe, no training),
    scores on the digits' test split what the TF reference's logits score on the same images;
    kNN and fine-tuning run on the imported checkpoint unchanged."""
    config = tiny_eval_config("x", **DIGITS, data_dir=tfds_dir, image_size=16,
                              classifier_from_probe=True, num_train_steps=0)
    test = jobs.load_splits(config, "test").test
    batches = list(eval_input.eval_batches(test, global_batch=300, image_size=16))
    images = np.concatenate([b["image"] for b in batches]).astype(np.float32) / 255.0
    labels = np.concatenate([b["label"] for b in batches])
    ref = tf1_reference(tmp_path / "tf", depth=18, width=0.125, cifar_stem=True, image_size=16,
                        num_classes=10, images=images)
    import_tf_lib.import_checkpoint(str(tmp_path / "tf"), str(tmp_path / "ours"))
    config.pretrained = str(tmp_path / "ours")
    results = linear_eval_lib.run(config, str(tmp_path / "linear"))
    assert results["train_steps"] == 0 and results["num_eval_examples"] == 300
    assert results["top1"] == pytest.approx(np.mean(ref.logits.argmax(-1) == labels), abs=1e-9)
    assert results["checkpoint_step"] == 1234
    knn_results = knn_lib.run(tiny_eval_config(str(tmp_path / "ours"), "knn", **DIGITS,
                                               data_dir=tfds_dir, image_size=16),
                              str(tmp_path / "knn"))
    assert 0 <= knn_results["knn_top1"] <= 1
    ft = finetune_lib.run(tiny_eval_config(str(tmp_path / "ours"), "finetune", **DIGITS,
                                           data_dir=tfds_dir, image_size=16, num_train_steps=1,
                                           optimizer="lars", ft_proj_selector=1),
                          str(tmp_path / "ft"))
    assert ft["train_steps"] == 1 and 0 <= ft["top1"] <= 1


def test_command_line_import(tmp_path, tf1_reference, run_job):
    tf1_reference(tmp_path / "tf", depth=18, width=0.125, cifar_stem=True, image_size=16,
                  global_step=97657)
    out = tmp_path / "ours"
    result = run_job("import_tf", f"--checkpoint={tmp_path / 'tf'}", f"--workdir={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [x for x in result.stdout.splitlines() if x.startswith("import_tf:")]
    assert len(lines) == 1 and "ResNet-18 x0.125" in lines[0], result.stdout
    assert (out / "checkpoints" / "97657").is_dir()
    doc = json.loads((out / "import.json").read_text())
    assert doc["global_step"] == 97657 and doc["variables"] == 119
    again = run_job("import_tf", f"--checkpoint={tmp_path / 'tf'}", f"--workdir={out}")
    assert again.returncode == 2 and "already holds checkpoints" in again.stderr
    with pytest.raises(UserError, match="has no online probe"):  # no head_supervised here
        pretrained.load(str(out), with_probe=True)


def test_a_checkpoint_missing_a_variable_is_one_error_line(tmp_path, tf1_reference, run_job,
                                                           error_lines):
    tf1_reference(tmp_path / "tf", depth=18, width=0.125, cifar_stem=True, image_size=16,
                  ops=False, exclude=("base_model/batch_normalization_5/moving_variance",))
    result = run_job("import_tf", f"--checkpoint={tmp_path / 'tf'}",
                     f"--workdir={tmp_path / 'ours'}")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    errors = error_lines(result)
    assert len(errors) == 1 and "missing base_model/batch_normalization_5/moving_variance" \
        in errors[0], result.stderr[-2000:]
    assert not (tmp_path / "ours" / "checkpoints").exists()


def test_unknown_shapes_and_bad_paths_are_clear_errors(tmp_path, tf1_reference):
    tf1_reference(tmp_path / "tf", depth=18, width=0.125, cifar_stem=True, image_size=16,
                  ops=False, reshape={"base_model/conv2d_7/kernel": (3, 3, 8, 17)})
    with pytest.raises(UserError, match=r"base_model/conv2d_7/kernel has shape \(3, 3, 8, 17\), "
                       r"expected \(3, 3, 8, 16\)"):
        import_tf_lib.import_checkpoint(str(tmp_path / "tf"), str(tmp_path / "a"))
    with pytest.raises(UserError, match="--ema: checkpoint .* has no ema_model/"):
        import_tf_lib.import_checkpoint(str(tmp_path / "tf"), str(tmp_path / "b"), ema=True)
    with pytest.raises(UserError, match="no TF checkpoint at"):
        import_tf_lib.import_checkpoint(str(tmp_path / "nothing"), str(tmp_path / "c"))
    (tmp_path / "sm").mkdir()
    (tmp_path / "sm" / "saved_model.pb").write_bytes(b"")
    with pytest.raises(UserError, match="is a TF2 SavedModel"):
        import_tf_lib.import_checkpoint(str(tmp_path / "sm"), str(tmp_path / "d"))


def test_tf2_object_checkpoint_with_the_official_keys_imports(tmp_path, official_listing):
    """A tf.train.Checkpoint whose object graph has exactly the keys the official tf2/ code
    writes (R18 CIFAR, supervised head; random values) imports, each value where the official
    structure puts it."""
    import tensorflow as tf

    keys = {k[: -len("/.ATTRIBUTES/VARIABLE_VALUE")]: s
            for k, s in official_listing("tf2_r18_cifar10_checkpoint.tsv").items()
            if k.startswith("model/") and "OPTIMIZER_SLOT" not in k}
    rng = np.random.default_rng(0)
    values = {k: rng.normal(0, 0.1, s).astype(np.float32) for k, s in keys.items()}
    nested: dict = {}
    for key, value in values.items():
        node = nested
        *parents, leaf = key.split("/")[1:]
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value

    def trackable(tree):
        """Dicts -> tf.Module attributes, digit keys -> lists (gaps: empty modules)."""
        if isinstance(tree, np.ndarray):
            return tf.Variable(tree)
        if all(k.isdigit() for k in tree):
            return [trackable(tree[str(i)]) if str(i) in tree else tf.Module()
                    for i in range(max(map(int, tree)) + 1)]
        module = tf.Module()
        for k, v in tree.items():
            setattr(module, k, trackable(v))
        return module

    root = trackable(nested)
    ckpt = tf.train.Checkpoint(model=root, global_step=tf.Variable(500, dtype=tf.int64))
    tf.train.CheckpointManager(ckpt, str(tmp_path / "tf2"), max_to_keep=1).save(
        checkpoint_number=500)
    summary = import_tf_lib.import_checkpoint(str(tmp_path / "tf2"), str(tmp_path / "ours"))
    assert summary["format"] == "tf2" and summary["global_step"] == 500
    assert summary["variables"] == len(values) == 121
    pre = pretrained.load(str(tmp_path / "ours"), with_probe=True)
    p = "model/resnet_model/"
    np.testing.assert_array_equal(pre.variables["params"]["stem_conv"]["kernel"],
                                  values[f"{p}initial_conv_relu_max_pool/0/conv2d/kernel"])
    np.testing.assert_array_equal(
        pre.variables["batch_stats"]["block2_0"]["shortcut_bn"]["var"],
        values[f"{p}block_groups/1/layers/0/shortcut_layers/1/bn/moving_variance"])
    np.testing.assert_array_equal(
        pre.variables["params"]["block4_1"]["bn2"]["scale"],
        values[f"{p}block_groups/3/layers/1/conv2d_bn_layers/3/bn/gamma"])
    np.testing.assert_array_equal(pre.probe_variables["kernel"],
                                  values["model/supervised_head/linear_layer/dense/kernel"])
