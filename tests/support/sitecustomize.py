"""Test subprocesses only (tests/conftest.py puts this folder on their PYTHONPATH): every process
of a multi-process job writes the programs it compiles to the persistent compilation cache.

JAX writes cache entries from process 0 only (on a pod's shared filesystem that avoids write
contention), and on CPU each process's programs have cache keys of their own (the serialized
compile options differ per process), so without this every rerun of a 2-process test job
recompiles all of process 1's programs while process 0 waits for it in the first collective.
Each process writes only its own keys to a local test directory, so nothing contends.

With SIMCLR_TEST_TPU_VM=1, JAX's cluster detection also believes it runs on a Cloud TPU VM
(jax's cloud_tpu_init decides that from TPU chips on the PCI bus): the test then serves the
VM's metadata itself (GCE_METADATA_IP), as a slice made by `gcloud compute tpus tpu-vm create`
presents it. The job still runs on the CPU.

Each patch is applied when its module is first imported (a meta path hook), so Python
processes that never import JAX pay nothing.
"""

import importlib.abc
import importlib.machinery
import os
import sys


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


def _on_a_tpu_vm(cloud_tpu_cluster) -> None:
    """JAX's TPU cluster detection as on a TPU VM; the metadata server is the test's."""
    cloud_tpu_cluster.running_in_cloud_tpu_vm = True
    os.environ.pop("TPU_SKIP_MDS_QUERY", None)  # set by cloud_tpu_init where no chips are found


_PATCHES = {"jax._src.compiler": _patch}
if os.environ.get("SIMCLR_TEST_TPU_VM") == "1":
    _PATCHES["jax._src.clusters.cloud_tpu_cluster"] = _on_a_tpu_vm


class _PatchOnImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        patch = _PATCHES.pop(name, None)
        if patch is None:
            return None
        if not _PATCHES:
            sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_patch(module) -> None:
            exec_module(module)
            patch(module)

        spec.loader.exec_module = exec_then_patch
        return spec


sys.meta_path.insert(0, _PatchOnImport())
