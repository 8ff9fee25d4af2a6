"""Loading a pretrained encoder into your own model: `simclr_jax.evals.pretrained`, by its
original name.

    from simclr_jax import downstream
    enc = downstream.load_encoder("runs/default")          # newest step of a pretraining run
    h = enc.module.apply(enc.variables, images, train=False)  # images: float in [0, 1]
"""

from simclr_jax.evals.pretrained import (  # noqa: F401  (the public names of evals.pretrained)
    Pretrained,
    abstract_variables,
    architecture_diff,
    checkpoints_root,
    list_steps,
    load,
    load_encoder,
    random_init,
    read_config,
    resolve_checkpoint,
)
