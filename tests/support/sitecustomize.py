"""Test subprocesses only (tests/conftest.py puts this folder on their PYTHONPATH): every process
of a multi-process job writes the programs it compiles to the persistent compilation cache.

JAX writes cache entries from process 0 only (on a pod's shared filesystem that avoids write
contention), and on CPU each process's programs have cache keys of their own (the serialized
compile options differ per process), so without this every rerun of a 2-process test job
recompiles all of process 1's programs while process 0 waits for it in the first collective.
Each process writes only its own keys to a local test directory, so nothing contends.

The patch is applied when `jax._src.compiler` is first imported (a meta path hook), so Python
processes that never import JAX pay nothing.
"""

import importlib.abc
import importlib.machinery
import sys

_MODULE = "jax._src.compiler"


def _patch(compiler) -> None:
    """compiler._cache_write without its `process_id != 0` early return."""
    from jax._src import compilation_cache, config

    def cache_write(cache_key, compile_time_secs, module_name, backend, executable,
                    host_callbacks) -> None:
        too_quick = compile_time_secs < config.persistent_cache_min_compile_time_secs.value
        if host_callbacks or too_quick:
            return
        compilation_cache.put_executable_and_time(cache_key, module_name, executable, backend,
                                                  int(compile_time_secs))

    compiler._cache_write = cache_write


class _PatchOnImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != _MODULE:
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_patch(module) -> None:
            exec_module(module)
            _patch(module)

        spec.loader.exec_module = exec_then_patch
        return spec


sys.meta_path.insert(0, _PatchOnImport())
