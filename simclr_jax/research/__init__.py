"""Research tooling on top of the library: the paper's ablation sweeps (sweep.py, experiments/,
sweep_data.py, sweep_report.py), the supervised baseline (supervised.py) and augmentation
pictures (grid.py)."""
