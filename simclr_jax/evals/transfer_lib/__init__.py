"""Transfer learning (SimCLR appendix B.8, after Kornblith et al. 2019): linear and fine-tuned
evaluation of a pretrained encoder on other datasets. The command is simclr_jax/transfer.py."""
