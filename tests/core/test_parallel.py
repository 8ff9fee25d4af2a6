"""core/parallel.py: programs compiled to run once."""

from functools import partial

import jax
import numpy as np

from simclr_jax.core import optim, parallel, train
from simclr_jax.models import build_model


def test_run_once_gives_the_bits_of_the_default_compile(tiny_config):
    """The CPU init compile (O2) must not change a single initial value: a run's parameters
    are a function of its seed, whatever compiled them."""
    config = tiny_config()
    model = build_model(config, num_classes=10)
    tx = optim.build_optimizer(config, optim.learning_rate_schedule(config, 10, 100))
    init = partial(train.create_train_state, model, tx, image_size=config.image_size)
    key = jax.random.PRNGKey(3)
    fast = parallel.run_once(init, key)
    default = jax.jit(init)(key)
    leaves = jax.tree_util.tree_leaves(default)
    assert len(leaves) > 50
    for a, b in zip(leaves, jax.tree_util.tree_leaves(fast), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
