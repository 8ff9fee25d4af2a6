"""Evaluation input, streamed from any Source: exact-once eval passes on any process count,
supervised training batches in the seeded order (resumable by step), the official
preprocessing (against a transcription of the official TF2 functions, on real JPEGs), and a
corrupt image named in one clear error."""

import collections
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from simclr_jax.data import eval_input, pretrain_input, sources
from simclr_jax.errors import UserError


@pytest.fixture(scope="module")
def data_dir(sharded_digits) -> str:
    return sharded_digits


def _array_source(n: int, size: int, num_classes: int = 3, seed: int = 0) -> sources.Source:
    rng = np.random.default_rng(seed)
    return sources.Source(name="array", num_examples=n, num_classes=num_classes,
                          images=rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
                          labels=(np.arange(n) % num_classes).astype(np.int32))


@pytest.mark.parametrize("kind", ["memory", "stream", "folder"])
@pytest.mark.parametrize("process_count", [1, 3])
def test_eval_reads_every_example_once_on_any_process_count(tmp_path, data_dir, kind,
                                                            process_count, tiny_config,
                                                            folder_config, write_images):
    if kind == "folder":
        write_images(tmp_path / "imgs", 10)
        config, split, batch = folder_config(tmp_path / "imgs", data_dir=data_dir), "train", 6
    else:
        config, split, batch = tiny_config(data_dir=data_dir, data_mode=kind), "test", 24
    seen, lengths, num_examples = collections.Counter(), set(), None
    for p in range(process_count):
        source = sources.open_source(config, split, process_index=p,
                                     process_count=process_count, for_eval=True)
        num_examples = len(source)
        batches = list(eval_input.eval_batches(
            source, image_size=12, global_batch=batch, process_index=p,
            process_count=process_count))
        lengths.add(len(batches))
        for b in batches:
            assert b["image"].shape == (batch // process_count, 12, 12, 3)
            assert (b["index"][~b["mask"]] == -1).all()
            seen.update(b["index"][b["mask"]].tolist())
            if source.labels is not None:  # labels travel with their example
                np.testing.assert_array_equal(b["label"][b["mask"]],
                                              source.labels[b["index"][b["mask"]]])
    assert lengths == {-(-num_examples // batch)}  # same number of batches on every process
    assert seen == collections.Counter(range(num_examples))  # each example exactly once
    assert num_examples % batch  # the last batch is padded in every case here


@pytest.mark.parametrize("n,batch,processes", [(23, 8, 1), (23, 8, 2), (5, 8, 4), (16, 8, 2)])
def test_eval_positions_cover_each_example_once(n, batch, processes):
    shares = [eval_input.eval_positions(n, batch, p, processes) for p in range(processes)]
    # Every process runs the same number of batches (collectives need it).
    assert len({idx.shape for idx, _ in shares}) == 1
    assert shares[0][0].shape == (-(-n // batch), batch // processes)
    # Reassembled global batches: process blocks side by side, in order.
    idx = np.concatenate([i for i, _ in shares], axis=1).reshape(-1)
    mask = np.concatenate([m for _, m in shares], axis=1).reshape(-1)
    assert list(idx[mask]) == list(range(n))
    assert not mask[n:].any() and mask[:n].all()  # padding only at the tail


def test_eval_keeps_native_size_and_centre_crops_above_32px():
    source = _array_source(11, 8)
    batches = list(eval_input.eval_batches(source, global_batch=4, image_size=8))
    assert [b["mask"].sum() for b in batches] == [4, 4, 3]
    images = np.concatenate([b["image"] for b in batches])[:11]
    np.testing.assert_array_equal(images, source.images)  # <= 32 px: untouched
    big = _array_source(2, 40)
    # 87.5% of 40 = 35: at image_size 35 the crop needs no resize, so it is a plain slice with
    # the official offsets ((40 - 35 + 1) // 2 = 3).
    (batch,) = eval_input.eval_batches(big, global_batch=2, image_size=35)
    np.testing.assert_array_equal(batch["image"], big.images[:, 3:38, 3:38])


def test_train_dataset_follows_the_seeded_stream_and_resumes_by_step():
    source = _array_source(20, 8, num_classes=20)  # label == index: the labels reveal the order
    kwargs = dict(seed=3, global_batch=8, image_size=8, crop_area_min=0.5)
    first = list(eval_input.train_dataset(source, **kwargs).take(6).as_numpy_iterator())
    stream = pretrain_input.stream_indices(3, 20, 8, 0, 0, 1)
    for a in first:
        idx, pos = next(stream)
        np.testing.assert_array_equal(a["label"], idx)
        np.testing.assert_array_equal(a["position"], pos)
    resumed = next(eval_input.train_dataset(source, start_step=4, **kwargs).as_numpy_iterator())
    for key in ("image", "label", "position"):
        np.testing.assert_array_equal(resumed[key], first[4][key])
    plain = next(eval_input.train_dataset(source, augment=False, **kwargs).as_numpy_iterator())
    np.testing.assert_array_equal(plain["image"], source.images[plain["label"]])
    # A process's rows are its block of the global batch.
    half = next(eval_input.train_dataset(source, process_index=1, process_count=2, **kwargs)
                .as_numpy_iterator())
    np.testing.assert_array_equal(half["label"], first[0]["label"][4:])


def test_streamed_training_batches_resume_and_carry_the_records_labels(data_dir, tiny_config):
    config = tiny_config(data_dir=data_dir, data_mode="stream")
    source = sources.open_source(config, "train")
    memory = sources.open_source(tiny_config(data_dir=data_dir, data_mode="memory"), "train")
    kwargs = dict(seed=0, global_batch=48, image_size=8, crop_area_min=0.3)
    plain = next(eval_input.train_batches(source, augment=False, **kwargs))
    # Each streamed image comes with its own label: find it in the in-memory split.
    by_pixels = {im.tobytes(): y for im, y in zip(memory.images, memory.labels, strict=True)}
    assert [by_pixels[im.tobytes()] for im in plain["image"]] == plain["label"].tolist()
    straight = eval_input.train_batches(source, **kwargs)
    first = [next(straight) for _ in range(34)]  # 34 * 48 > 1497: into the second epoch
    for step in (5, 31, 33):
        resumed = next(eval_input.train_batches(source, start_step=step, **kwargs))
        for key in ("image", "label", "position"):
            np.testing.assert_array_equal(resumed[key], first[step][key])


# ---- The official preprocessing -----------------------------------------------------------------
# A transcription of google-research/simclr tf2/data_util.py (center_crop, _compute_crop_shape,
# distorted_bounding_box_crop, crop_and_resize, preprocess_for_eval; the flip of
# preprocess_for_train). It works on the fully decoded image in float [0, 1], as the official
# code does. Its two random draws (the window and the flip) are the stateful
# tf.image.sample_distorted_bounding_box / random_flip_left_right there; here their stateless
# twins with the seeds our pipeline uses, so that both draw the same window and flip.

CROP_PROPORTION = 0.875


def _official_compute_crop_shape(image_height, image_width, aspect_ratio, crop_proportion):
    image_width_float = tf.cast(image_width, tf.float32)
    image_height_float = tf.cast(image_height, tf.float32)

    def _requested_aspect_ratio_wider_than_image():
        crop_height = tf.cast(tf.math.rint(crop_proportion / aspect_ratio * image_width_float),
                              tf.int32)
        crop_width = tf.cast(tf.math.rint(crop_proportion * image_width_float), tf.int32)
        return crop_height, crop_width

    def _image_wider_than_requested_aspect_ratio():
        crop_height = tf.cast(tf.math.rint(crop_proportion * image_height_float), tf.int32)
        crop_width = tf.cast(tf.math.rint(crop_proportion * aspect_ratio * image_height_float),
                             tf.int32)
        return crop_height, crop_width

    return tf.cond(aspect_ratio > image_width_float / image_height_float,
                   _requested_aspect_ratio_wider_than_image,
                   _image_wider_than_requested_aspect_ratio)


def _official_center_crop(image, height, width, crop_proportion):
    shape = tf.shape(image)
    image_height, image_width = shape[0], shape[1]
    crop_height, crop_width = _official_compute_crop_shape(image_height, image_width,
                                                           width / height, crop_proportion)
    offset_height = ((image_height - crop_height) + 1) // 2
    offset_width = ((image_width - crop_width) + 1) // 2
    image = tf.image.crop_to_bounding_box(image, offset_height, offset_width, crop_height,
                                          crop_width)
    return tf.image.resize([image], [height, width], method=tf.image.ResizeMethod.BICUBIC)[0]


def _official_eval(encoded, size):
    image = tf.image.convert_image_dtype(tf.io.decode_jpeg(encoded, channels=3), tf.float32)
    image = _official_center_crop(image, size, size, crop_proportion=CROP_PROPORTION)
    return tf.clip_by_value(tf.reshape(image, [size, size, 3]), 0.0, 1.0)


def _official_train(encoded, size, seed):
    """crop_and_resize (p = 1) + flip, colour off (fine-tuning / linear eval), final clip."""
    image = tf.image.convert_image_dtype(tf.io.decode_jpeg(encoded, channels=3), tf.float32)
    bbox = tf.constant([0.0, 0.0, 1.0, 1.0], dtype=tf.float32, shape=[1, 1, 4])
    aspect_ratio = size / size
    begin, box, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image), bounding_boxes=bbox, seed=tf.random.experimental.stateless_fold_in(
            seed, 0), min_object_covered=0.1,
        aspect_ratio_range=(3. / 4 * aspect_ratio, 4. / 3. * aspect_ratio),
        area_range=(0.08, 1.0), max_attempts=100, use_image_if_no_bounding_boxes=True)
    offset_y, offset_x, _ = tf.unstack(begin)
    target_height, target_width, _ = tf.unstack(box)
    image = tf.image.crop_to_bounding_box(image, offset_y, offset_x, target_height,
                                          target_width)
    image = tf.image.resize([image], [size, size], method=tf.image.ResizeMethod.BICUBIC)[0]
    image = tf.image.stateless_random_flip_left_right(
        image, tf.random.experimental.stateless_fold_in(seed, 1))
    return tf.clip_by_value(tf.reshape(image, [size, size, 3]), 0.0, 1.0)


@pytest.fixture(scope="module")
def real_jpegs(tmp_path_factory) -> str:
    """scikit-image's photographs as JPEGs of mixed sizes (three are JPEGs as shipped)."""
    import skimage

    root = tmp_path_factory.mktemp("real_jpegs")
    data = os.path.join(os.path.dirname(skimage.__file__), "data")
    for name in ("rocket.jpg", "hubble_deep_field.jpg", "retina.jpg"):
        (root / name).write_bytes(open(os.path.join(data, name), "rb").read())
    for name, size in (("astronaut.png", (400, 350)), ("chelsea.png", (333, 500)),
                       ("coffee.png", (420, 280)), ("motorcycle_left.png", (741, 500))):
        Image.open(os.path.join(data, name)).convert("RGB").resize(size).save(
            root / name.replace(".png", ".jpg"), quality=90)
    return str(root)


@pytest.mark.parametrize("size", [224, 64])
def test_eval_and_training_preprocessing_match_the_official_functions(real_jpegs, size,
                                                                      folder_config):
    """Our pipeline's uint8 output is the official float output rounded to 1/255: the
    official code resizes in float and never rounds, we round once after the resize (bicubic
    is linear, so scaling by 1/255 before or after changes only float rounding, < 1e-5)."""
    source = sources.open_source(folder_config(real_jpegs), "train", for_eval=True)
    bound = 0.5 / 255 + 1e-5
    evaluated = next(eval_input.eval_batches(source, image_size=size, global_batch=8))
    trained = next(eval_input.train_batches(source, seed=5, global_batch=7, image_size=size,
                                            crop_area_min=0.08))
    order, _ = next(pretrain_input.stream_indices(5, len(source), 7, 0, 0, 1))
    for i in range(len(source)):
        encoded = tf.io.read_file(source.files[evaluated["index"][i]])
        official = _official_eval(encoded, size).numpy()
        diff = np.abs(evaluated["image"][i] / 255.0 - official).max()
        assert diff <= bound, (source.files[i], diff)
        position = trained["position"][i]
        encoded = tf.io.read_file(source.files[order[i]])
        seed = tf.random.experimental.stateless_fold_in(
            tf.constant([5, eval_input.TRAIN_SEED_SALT], tf.int64), position)
        official = _official_train(encoded, size, seed).numpy()
        diff = np.abs(trained["image"][i] / 255.0 - official).max()
        assert diff <= bound, (i, diff)
    # The comparison can fail: another example's official output is far away.
    assert np.abs(evaluated["image"][0] / 255.0 - _official_eval(
        tf.io.read_file(source.files[1]), size).numpy()).max() > 0.2


def test_a_corrupt_image_in_an_eval_folder_is_named(tmp_path, folder_config, write_images,
                                                   truncated_jpeg):
    write_images(tmp_path / "imgs", 9)
    bad = truncated_jpeg(tmp_path / "imgs" / "broken.jpg")
    source = sources.open_source(folder_config(tmp_path / "imgs"), "train", for_eval=True)
    with pytest.raises(UserError, match=f"cannot read image file {bad}"):
        list(eval_input.eval_batches(source, image_size=8, global_batch=4))
    with pytest.raises(UserError, match=f"cannot read image file {bad}.*skip_corrupt_images"):
        for _ in zip(range(10), eval_input.train_batches(
                source, seed=0, global_batch=4, image_size=8, crop_area_min=0.3), strict=False):
            pass
    skipping = sources.open_source(folder_config(tmp_path / "imgs", skip_corrupt_images=True),
                                   "train", for_eval=True)
    assert len(skipping) == 9
    assert sum(b["mask"].sum() for b in eval_input.eval_batches(
        skipping, image_size=8, global_batch=4)) == 9
