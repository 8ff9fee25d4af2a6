"""The CPU backend: what makes XLA:CPU fast enough to debug, test and benchmark SimCLR on a
laptop or a CI machine. Nothing on the TPU/GPU path needs it; the numbers are the same with or
without it (every piece is tested against XLA's own result).

Its two entry points:
- `conv_class(impl)`: the convolution a ResNet runs on the CPU backend (`ResNet(conv=...)`):
  oneDNN's (onednn.py, compiled from onednn_conv.cc on first use), Winograd (winograd.py) or
  im2col (conv.py). core/backend.py calls it, and only where the backend is the CPU, so TPU and
  GPU runs never import those modules.
- `prepare_process()` before the backend starts and `finish_process_setup(prepared)` after
  jax.distributed.initialize (cli.run_command): step memory reuse (host_memory.py) and, with
  several simulated devices in one process, all-reduces in one order (collectives.py). Both
  change nothing where the backend is not the CPU.
"""

import flax.linen as nn

from simclr_jax.cpu import collectives, host_memory


def conv_class(impl: str) -> type[nn.Module]:
    """The CPU convolution module for config.conv_impl `impl` (cpu/conv.py's conv_class)."""
    from simclr_jax.cpu import conv  # the kernels' modules, only when a CPU model is built

    return conv.conv_class(impl)


def prepare_process() -> bool:
    """Before the XLA backend starts: orders simulated devices' collectives and runs
    single-device CPU steps inline. Returns what finish_process_setup needs."""
    collectives.keep_collectives_in_order()
    return host_memory.run_cpu_steps_inline()


def finish_process_setup(inline: bool) -> None:
    """After jax.distributed.initialize (it starts the backend): on the CPU backend with inline
    steps, freed step memory is kept for the next step."""
    host_memory.keep_freed_host_memory(inline)
