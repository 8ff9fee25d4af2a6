"""Input: every dataset behind one dispatcher (sources.py: TFDS in memory or streamed,
image folders, embedded data), whole splits in memory (splits.py), the pretraining input
(pretrain_input.py) and the evaluation input (eval_input.py)."""
