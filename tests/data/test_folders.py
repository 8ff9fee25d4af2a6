"""Image folders as datasets: layouts, labels, slices, image kinds, corrupt files, bad input."""

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from simclr_jax.augment import views
from simclr_jax.augment.recipes import Augmentation
from simclr_jax.core import train
from simclr_jax.data import pretrain_input, sources, splits
from simclr_jax.errors import UserError

ROOT = Path(__file__).resolve().parents[2]
CIFAR = ROOT.parent / "shared" / "data" / "cifar10"  # present next to a dev checkout


def first_epoch(source, config):
    """Every batch of the first epoch (views included), as numpy."""
    batches = pretrain_input.pretrain_batches(source, config)
    return [next(batches) for _ in range(-(-len(source) // config.batch_size))]


def test_labelled_folder_labels_slices_and_image_kinds(tmp_path, tfds_dir, folder_config,
                                                       labelled_folder):
    root = labelled_folder(tmp_path / "pets")
    config = folder_config(root, batch_size=4)
    train_src = sources.open_source(config, "train")
    assert len(train_src) == 12 and train_src.num_classes == 2
    for path, label in zip(train_src.files, train_src.labels, strict=True):
        assert ("cat", "dog")[label] == Path(path).parent.name
    # Slices are disjoint and cover the split; the order mixes the classes.
    a, b = (sources.open_source(config, s) for s in ("train[:50%]", "train[50%:]"))
    assert sorted([*a.files, *b.files]) == sorted(train_src.files)
    assert set(a.labels) == {0, 1}
    # The val split maps class names to the same indices.
    val = sources.open_source(config, "val")
    assert len(val) == 4 and all(("cat", "dog")[y] == Path(p).parent.name
                                 for p, y in zip(val.files, val.labels, strict=True))
    # Grey, RGBA, CMYK, WebP and odd sizes all become RGB views of the configured size.
    for batch in first_epoch(train_src, config):
        assert batch["view1"].shape == (4, 8, 8, 3) and batch["view1"].dtype == np.uint8
        assert set(batch["label"]) <= {0, 1}


def test_unlabelled_flat_and_nested_folders(tmp_path, tfds_dir, folder_config, write_images):
    flat = tmp_path / "flat"
    write_images(flat, 5)
    src = sources.open_source(folder_config(flat), "train")
    assert len(src) == 5 and src.labels is None and src.num_classes == 0
    nested = tmp_path / "nested"
    write_images(nested / "2019", 3, seed=1)
    write_images(nested / "2020" / "summer", 2, seed=2)
    auto = sources.open_source(folder_config(nested), "train")
    assert auto.num_classes == 2  # sub-folders read as classes by default...
    none = sources.open_source(folder_config(nested, folder_labels="none"), "train")
    assert len(none) == 5 and none.labels is None  # ...unless folder_labels='none'


def test_corrupt_files_stop_with_the_file_name_by_default(tmp_path, tfds_dir, folder_config,
                                                          truncated_jpeg, write_images):
    root = tmp_path / "bad"
    write_images(root, 6)
    truncated_jpeg(root / "truncated.jpg")
    config = folder_config(root, batch_size=4)
    with pytest.raises(UserError, match=r"cannot read image file .*truncated\.jpg .*"
                                        r"skip_corrupt_images=True"):
        first_epoch(sources.open_source(config, "train"), config)
    (root / "notes.txt").write_text("not an image")
    with pytest.raises(UserError, match=r"notes\.txt is not an image"):
        sources.open_source(config, "train")


def test_corrupt_files_skipped_counted_and_cached(tmp_path, tfds_dir, caplog, folder_config,
                                                  truncated_jpeg, write_images):
    caplog.set_level(logging.INFO)
    root = tmp_path / "bad"
    write_images(root, 6)
    truncated_jpeg(root / "truncated.jpg")
    (root / "text.png").write_text("hello")
    (root / "notes.txt").write_text("not an image")
    config = folder_config(root, batch_size=4, skip_corrupt_images=True)
    src = sources.open_source(config, "train")
    assert len(src) == 6 and not any("truncated" in f or "text" in f for f in src.files)
    assert "skipped 2 unreadable image(s) and 1 non-image file(s)" in caplog.text
    scans = list(Path(tfds_dir, "folder_scans").glob("bad-train-*.json"))
    assert len(scans) == 1
    assert sorted(map(os.path.basename, json.loads(scans[0].read_text())["unreadable"])) == [
        "text.png", "truncated.jpg"]
    assert len(first_epoch(src, config)) == 2  # the rest trains
    caplog.clear()
    assert len(sources.open_source(config, "train")) == 6
    assert "read from the cache" in caplog.text


@pytest.mark.parametrize("make,dataset,split,overrides,message", [
    (None, "folder:{tmp}/missing", "train", {}, r"image folder .*missing does not exist"),
    ("empty", "folder:{tmp}/empty", "train", {}, r"contains no images"),
    ("pets", "folder:{tmp}/pets", "test", {}, r"split 'test' does not exist in image folder"),
    (None, "sklearn_digits", "validation", {},
     r"split 'validation' of dataset 'sklearn_digits' does not exist"),
    ("pets", "folder:{tmp}/pets", "train", {"image_size": 0}, r"image_size: must be > 0"),
])
def test_bad_input_is_one_clear_error(tmp_path, tfds_dir, make, dataset, split, overrides,
                                      message, tiny_config, labelled_folder):
    if make == "empty":
        (tmp_path / "empty" / "train").mkdir(parents=True)
    elif make == "pets":
        labelled_folder(tmp_path / "pets", per_class=1)
    config = tiny_config(dataset=dataset.format(tmp=tmp_path), **overrides)
    with pytest.raises(UserError, match=message):
        sources.open_source(config, split)


def test_batch_larger_than_the_split_is_an_error(tmp_path, tfds_dir, folder_config,
                                                 labelled_folder):
    root = labelled_folder(tmp_path / "pets", per_class=2)
    with pytest.raises(UserError, match=r"batch_size=16 is larger than the 4 examples"):
        train.train_and_evaluate(folder_config(root, batch_size=16), str(tmp_path))


def test_cli_reports_a_missing_folder_on_one_line(tmp_path, tfds_dir):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")
    result = subprocess.run(
        [sys.executable, "-m", "simclr_jax.pretrain", f"--workdir={tmp_path / 'run'}",
         f"--config.dataset=folder:{tmp_path / 'nowhere'}", f"--config.data_dir={tfds_dir}"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 2 and "Traceback" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "nowhere does not exist" in errors[0], output


@pytest.mark.parametrize("overrides", [{}, {"crop_on": "device"}, {"augment_on": "host"}])
def test_each_augmentation_placement_feeds_the_train_step(tmp_path, tfds_dir, overrides,
                                                          folder_config, labelled_folder):
    root = labelled_folder(tmp_path / "pets", per_class=8)
    config = folder_config(root, blur_prob=0.5, image_size=16, **overrides)
    batch = next(pretrain_input.pretrain_batches(sources.open_source(config, "train"), config))
    expected = {"view1", "view2"} if not overrides.get("crop_on") else {"image", "image_valid"}
    assert expected <= set(batch)
    x = np.asarray(jax.jit(lambda b: views.augment_views(Augmentation.from_config(config), 3, b))(
        {k: v for k, v in batch.items() if k != "position"}))
    assert x.shape == (32, 16, 16, 3) and 0 <= x.min() and x.max() <= 1
    assert np.abs(x[0::2] - x[1::2]).mean() > 0.01  # two different views of each image


@pytest.mark.slow(28)
def test_pretraining_on_a_folder_with_the_crop_on_the_device(tmp_path, tfds_dir, folder_config,
                                                             labelled_folder):
    root = labelled_folder(tmp_path / "pets", per_class=8)
    config = folder_config(root, num_train_steps=2, checkpoint_every_steps=2,
                           crop_on="device")
    train.train_and_evaluate(config, str(tmp_path / "run"))
    rows = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2]
    assert all(np.isfinite(r["loss"]) for r in rows if "loss" in r)


@pytest.mark.skipif(not (CIFAR / "train").is_dir(), reason="shared CIFAR-10 folder absent")
def test_shared_cifar10_folder(tfds_dir, tiny_config):
    config = tiny_config(dataset=f"folder:{CIFAR}", image_size=32, batch_size=8)
    src = sources.open_source(config, "train[:1%]")
    assert len(src) == 500 and src.num_classes == 10
    batch = next(pretrain_input.pretrain_batches(src, config))
    assert batch["view1"].shape == (8, 32, 32, 3)


def test_folders_load_into_memory_for_evaluation(tmp_path, tfds_dir, folder_config,
                                                 labelled_folder, write_images):
    """Equal sizes stay pixel-exact (PIL is the reference); mixed sizes become 256 squares."""
    from PIL import Image

    same = tmp_path / "same"
    for cls in ("a", "b"):
        write_images(same / "val" / cls, 0)
        for i in range(3):
            arr = np.random.default_rng(10 * ord(cls) + i).integers(0, 256, (12, 10, 3))
            Image.fromarray(arr.astype(np.uint8)).save(same / "val" / cls / f"{i}.png")
    split = splits.load_split(f"folder:{same}", "val", tfds_dir)
    listed = sources.open_source(folder_config(same), "val")
    expected = np.stack([np.asarray(Image.open(f)) for f in listed.files])
    np.testing.assert_array_equal(split.images, expected)
    np.testing.assert_array_equal(split.labels, listed.labels)
    assert split.num_classes == 2

    mixed = splits.load_split(f"folder:{labelled_folder(tmp_path / 'mixed')}", "val", tfds_dir)
    assert mixed.images.shape == (4, 256, 256, 3) and sorted(mixed.labels) == [0, 0, 1, 1]


def test_evaluation_input_names_an_unreadable_file(tmp_path, tfds_dir, truncated_jpeg,
                                                   write_images):
    root = tmp_path / "bad"
    write_images(root / "val" / "a", 3)
    truncated_jpeg(root / "val" / "a" / "truncated.jpg")
    with pytest.raises(UserError, match=r"cannot read image .*truncated\.jpg .*remove or replace"):
        splits.load_split(f"folder:{root}", "val", tfds_dir)
