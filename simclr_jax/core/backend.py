"""Which convolution the ResNet runs on this process's backend, resolved once per model build.

XLA's own (nn.Conv) on TPU and GPU; on the CPU backend, the CPU package's choice
(simclr_jax/cpu: oneDNN where it builds, else Winograd), which is 1.5-4x faster per layer there.
The CPU package is imported only here and only for a CPU model, so TPU/GPU runs never load it.
"""

import functools

import flax.linen as nn
import jax
from absl import logging

from simclr_jax.errors import UserError

# config.conv_impl values that name a CPU-only implementation.
_CPU_ONLY = ("im2col", "winograd", "onednn")


def conv_module(impl: str) -> type[nn.Module]:
    """The module class for ResNet(conv=...) under config.conv_impl `impl`: 'xla' is nn.Conv;
    'auto' is nn.Conv on TPU/GPU and the CPU package's choice on the CPU backend; 'im2col',
    'winograd', 'onednn' name a CPU implementation ('onednn' on TPU/GPU is a UserError)."""
    platform = jax.default_backend()
    if impl == "xla" or (impl == "auto" and platform != "cpu"):
        chosen = nn.Conv
    elif impl == "onednn" and platform != "cpu":
        raise UserError(f"config.conv_impl: 'onednn' runs on the CPU backend only, not "
                        f"{platform}; use conv_impl=auto")
    else:
        from simclr_jax import cpu  # the CPU backend (or a CPU conv asked for by name) only

        chosen = cpu.conv_class(impl)
    _log_choice(impl, platform, chosen.__name__)
    return chosen


@functools.cache
def _log_choice(impl: str, platform: str, chosen: str) -> None:
    logging.info("convolutions: %s (config.conv_impl=%s, backend %s)", chosen, impl, platform)
