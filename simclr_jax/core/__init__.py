"""The training core: the sharded train step and loop (train.py), NT-Xent over the global batch
(losses.py), optimisers and schedules (optim.py), the device mesh and multi-process start-up
(parallel.py), Orbax checkpoints (checkpointing.py), preemption (preemption.py) and metric
writers (metric_io.py)."""
