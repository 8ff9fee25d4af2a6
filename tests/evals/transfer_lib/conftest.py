"""Fixtures of the transfer tests: a tiny transfer config, class folders and a multi-label
folder of learnable images (the class sets the colour), written with PIL."""

from collections.abc import Callable
from pathlib import Path

import ml_collections
import numpy as np
import pytest
from PIL import Image

COLOURS = np.array([[220, 40, 40], [40, 200, 40], [40, 40, 220], [200, 200, 40]])


def _image(rng: np.random.Generator, colour: np.ndarray) -> Image.Image:
    pixels = np.clip(colour + rng.normal(0, 25, (12, 12, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels)


@pytest.fixture(scope="session")
def transfer_config(tfds_dir) -> Callable[..., ml_collections.ConfigDict]:
    """transfer_config(pretrained, **overrides): the transfer default shrunk: 5 strengths,
    a 2-point fine-tune grid of 4 steps, batches of 16."""
    from simclr_jax import transfer_config as tc

    def make(pretrained: str, **overrides) -> ml_collections.ConfigDict:
        c = tc.get_config()
        c.pretrained = pretrained
        c.data_dir = tfds_dir
        c.eval_batch_size = 64
        c.linear_num_lambdas = 5
        c.linear_lambda_min = 1e-4
        c.linear_lambda_max = 1e0
        c.linear_threads = 1
        c.finetune_steps = 4
        c.finetune_batch_size = 16
        c.finetune_learning_rates = (0.01, 0.1)
        c.finetune_weight_decays = (0.0,)
        c.log_every_steps = 2
        c.checkpoint_every_steps = 2
        c.update(overrides)
        return c

    return make


@pytest.fixture(scope="session")
def class_folder() -> Callable[..., Path]:
    """class_folder(root, classes=3, per_class=8, splits=('train', 'test')): root/<split>/
    <class>/*.png, each class its own colour (plus noise)."""

    def make(root: Path, classes: int = 3, per_class: int = 8,
             splits: tuple[str, ...] = ("train", "test")) -> Path:
        rng = np.random.default_rng(0)
        for split in splits:
            for c in range(classes):
                folder = root / split / f"class{c}"
                folder.mkdir(parents=True, exist_ok=True)
                for i in range(per_class):
                    _image(rng, COLOURS[c]).save(folder / f"{i}.png")
        return root

    return make


@pytest.fixture(scope="session")
def multilabel_folder() -> Callable[..., Path]:
    """multilabel_folder(root, per_split=24): root/{train,test}/*.png with labels.csv; an
    image has label 'red' / 'blue' when that channel is bright (both, one or none)."""

    def make(root: Path, per_split: int = 24) -> Path:
        rng = np.random.default_rng(1)
        for split in ("train", "test"):
            folder = root / split
            folder.mkdir(parents=True, exist_ok=True)
            lines = ["file,labels"]
            for i in range(per_split):
                red, blue = i % 2, (i // 2) % 2
                colour = np.array([220 if red else 30, 90, 220 if blue else 30])
                _image(rng, colour).save(folder / f"{i}.png")
                names = [n for n, on in (("red", red), ("blue", blue)) if on]
                lines.append(f"{i}.png,{' '.join(names)}")
            (folder / "labels.csv").write_text("\n".join(lines) + "\n")
        return root

    return make


@pytest.fixture(scope="session")
def multilabel_tfds(tmp_path_factory) -> str:
    """A data_dir with `transfer_multi_label_test` prepared: a TFDS dataset shaped like
    voc/2007 (an `image` and a `labels` sequence of class labels, no `label`): 'red' / 'blue'
    when that channel is bright; train 32, test 24."""
    import tensorflow_datasets as tfds

    class TransferMultiLabelTest(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(12, 12, 3)),
                "labels": tfds.features.Sequence(tfds.features.ClassLabel(
                    names=["red", "blue"]))}))

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(32, 0),
                    "test": self._generate_examples(24, 1)}

        def _generate_examples(self, n, seed):
            rng = np.random.default_rng(seed)
            for i in range(n):
                red, blue = i % 2, (i // 2) % 2
                colour = np.array([220 if red else 30, 90, 220 if blue else 30])
                image = np.asarray(_image(rng, colour))
                yield i, {"image": image,
                          "labels": [k for k, on in enumerate((red, blue)) if on]}

    data_dir = str(tmp_path_factory.mktemp("multilabel_tfds"))
    tfds.disable_progress_bar()
    TransferMultiLabelTest(data_dir=data_dir).download_and_prepare()
    return data_dir
