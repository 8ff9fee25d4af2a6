"""Research tooling on top of the library: the paper's ablation sweeps (sweep_lib.py,
experiments/, sweep_data.py, sweep_report.py), the supervised baseline (supervised.py),
augmentation pictures (grid.py) and metric curves (plot_lib.py)."""
