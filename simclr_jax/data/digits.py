"""scikit-learn's digits as a TFDS dataset, prepared offline from the copy inside the package.

1,797 real 8x8 hand-written digits (10 classes); a seeded stratified 300-image test split.
"""

import numpy as np
import tensorflow_datasets as tfds

NUM_TEST = 300


class SklearnDigits(tfds.core.GeneratorBasedBuilder):
    """TFDS builder: importing this module registers the name `sklearn_digits`."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "scikit-learn load_digits, 8x8 RGB, train/test."}

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="scikit-learn's 8x8 hand-written digits (UCI), grey replicated to RGB.",
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(8, 8, 3)),
                "label": tfds.features.ClassLabel(num_classes=10),
            }),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download: the data ships with scikit-learn
        from sklearn.datasets import load_digits  # only needed when preparing
        from sklearn.model_selection import train_test_split

        digits = load_digits()
        images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
        images = np.repeat(images[..., None], 3, axis=-1)
        index = np.arange(len(images))
        train, test = train_test_split(index, test_size=NUM_TEST, random_state=0,
                                       stratify=digits.target)
        return {
            "train": self._generate_examples(images, digits.target, np.sort(train)),
            "test": self._generate_examples(images, digits.target, np.sort(test)),
        }

    def _generate_examples(self, images, labels, index):
        for i in index:
            yield int(i), {"image": images[i], "label": int(labels[i])}
