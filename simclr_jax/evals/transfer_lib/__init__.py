"""Transfer learning (SimCLR appendix B.8, after Kornblith et al. 2019): linear and fine-tuned
evaluation of a pretrained encoder on other datasets, the library of the command
simclr_jax/transfer.py (job.py runs it; linear_protocol.py and finetune_protocol.py are the two
protocols)."""
