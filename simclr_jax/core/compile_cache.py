"""JAX's persistent compilation cache for the jobs: a restart (preemption, resume, a rerun of
the same config) loads its compiled programs instead of compiling them again (minutes for a
ResNet-50 train step on a pod slice, every restart).

Where: --compilation_cache_dir, else JAX_COMPILATION_CACHE_DIR (JAX reads it itself), else
`<workdir>/compilation_cache`: storage every process of a pod already shares, gs:// included
(JAX's cache goes through etils.epath). JAX writes entries from process 0 only and keys them
by program, devices and compile options, so a changed config or topology just misses.
"""

import jax

from simclr_jax.core import checkpointing

DIR_NAME = "compilation_cache"
OFF = "none"


def enable(flag_value: str, workdir: str) -> str | None:
    """Turns the cache on per the flag (see the module doc); its directory, or None if off.

    Call before the job's first compilation: JAX opens the cache on first use.
    """
    if flag_value.strip().lower() == OFF:
        jax.config.update("jax_enable_compilation_cache", False)
        return None
    if flag_value:
        path = str(checkpointing.absolute(flag_value))
    elif jax.config.jax_compilation_cache_dir:  # the environment (or the user) chose already
        return jax.config.jax_compilation_cache_dir
    else:
        path = str(checkpointing.absolute(workdir) / DIR_NAME)
    jax.config.update("jax_compilation_cache_dir", path)
    return path
