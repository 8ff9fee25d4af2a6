"""Transfer learning as in the SimCLR paper (appendix B.8): linear and fine-tuned, on the
paper's datasets that TFDS has, prepared in data_dir.

    python -m simclr_jax.transfer --config=configs/transfer.py \\
        --config.pretrained=runs/imagenet --config.data_dir=gs://BUCKET/tfds \\
        --workdir=runs/imagenet_transfer
"""

from simclr_jax import transfer_config


def get_config():
    """The paper's protocol on `paper` (10 TFDS datasets; Birdsnap and FGVC Aircraft as
    folder:PATH entries); both protocols."""
    c = transfer_config.get_config()
    c.datasets = "paper"
    c.protocol = "both"
    return c
