"""The augmentation picture: a PNG grid of originals and view pairs."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from simclr_jax.errors import UserError
from simclr_jax.research import grid

ROOT = Path(__file__).resolve().parents[2]


def test_grid_png_of_the_sample_photos_has_the_expected_size(tmp_path):
    """Out of the box: the default config (scikit-image photos), from the command line."""
    out = tmp_path / "grid.png"
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")
    result = subprocess.run(
        [sys.executable, "-m", "simclr_jax.visualize", f"--out={out}", "--num_images=3",
         "--num_pairs=2", "--tile=40", "--config.image_size=40"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    image = np.asarray(Image.open(out))
    assert image.shape == (*grid.grid_size(3, 2, 40), 3)
    # Every tile holds a picture: no tile is blank background.
    gap, tile = grid.GAP, 40
    for r in range(3):
        for c in range(5):
            top, left = gap + r * (tile + gap), gap + c * (tile + gap)
            assert image[top:top + tile, left:left + tile].std() > 1, (r, c)


def test_out_that_is_not_a_png_is_refused_before_any_work(tmp_path):
    with pytest.raises(UserError, match=r"--out=.*grid.txt: expected a .png file name"):
        grid.write_grid(None, str(tmp_path / "grid.txt"))  # no config needed: checked first
    assert not list(tmp_path.iterdir())
