"""The paper's ablations as experiments: one module per experiment, `get_experiment(scale)`.

Found by name through this package (`python -m simclr_jax.sweep --experiment=NAME`), so they
work from an installed package too; `_common.py` holds the shared cpu and paper bases.
"""
