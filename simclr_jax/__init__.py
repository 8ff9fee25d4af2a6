"""SimCLR / SimCLRv2 contrastive pretraining in JAX/Flax."""

import os

# TensorFlow is only our input pipeline: keep its C++ logging and oneDNN notice out of the
# user's console. Must happen before anything imports tensorflow.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
