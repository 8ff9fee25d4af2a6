"""Input pipelines: datasets (TFDS, embedded) and the host-side augmentation."""
