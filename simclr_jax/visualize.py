"""Pictures of the training augmentation (library: research/grid.py): for N images, the
original and pairs of augmented views made by exactly the training code.

    python -m simclr_jax.visualize --out=grid.png        # scikit-image photos, ImageNet recipe
    python -m simclr_jax.visualize --config=configs/cifar10.py \\
        --config.dataset=folder:/data/cifar10 --out=cifar.png --num_images=6
"""

import os

from absl import flags

from simclr_jax import cli, config
from simclr_jax.research import grid


def define_flags() -> None:
    """The command's flags; defined only when it runs, so importing this module (tests, other
    jobs) adds no flags."""
    cli.define_config_flag(f"{os.path.abspath(config.__file__)}:visualize",
                           "Config file (configs/*.py); default: ImageNet augmentation on "
                           "scikit-image's sample photos.")
    flags.DEFINE_string("out", "augmentations.png", "PNG file to write.")
    flags.DEFINE_integer("num_images", 4, "Images (rows).", lower_bound=1)
    flags.DEFINE_integer("num_pairs", 3, "Augmented view pairs per image.", lower_bound=1)
    flags.DEFINE_integer("tile", 0, "Tile side in pixels (0: max(image_size, 96)).",
                         lower_bound=0)


def _visualize() -> None:
    f = flags.FLAGS
    print(f"wrote {grid.write_grid(f.config, f.out, f.num_images, f.num_pairs, f.tile)}")


def main() -> None:
    """Console-script entry point."""
    define_flags()
    cli.run_command(_visualize)


if __name__ == "__main__":
    main()
