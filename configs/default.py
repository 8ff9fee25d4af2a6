"""The embedded default (scikit-learn digits, no download), as a config file.

    python -m simclr_jax.pretrain --config=configs/default.py --workdir=runs/default

Same as running the job without --config.
"""

from simclr_jax.config import get_config

__all__ = ["get_config"]
