"""Step memory reuse on CPU (cpu/host_memory.py): a fresh process that repeats a jitted call
whose buffers exceed glibc's mmap threshold faults its pages in on every call by default, and
(nearly) never once the job's set-up has run. Each process is fresh: the dispatch mode is read
when the CPU client starts."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Repeats x = 2 sin(x) on 96 MiB: its output buffer (and temporaries) are malloc'd per call.
PROGRAM = """
import json, resource, sys
import jax, jax.numpy as jnp
from simclr_jax.cpu import host_memory
reuse = sys.argv[1] == "reuse"
inline = host_memory.run_cpu_steps_inline() if reuse else False
kept = host_memory.keep_freed_host_memory(inline)
f = jax.jit(lambda x: 2 * jnp.sin(x))
x = jnp.ones((24 << 20,), jnp.float32)
for _ in range(6):  # compiled, and the heap grown past the first calls' fragmentation
    jax.block_until_ready(f(x))
faults = []
for _ in range(10):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    y = jax.block_until_ready(f(x))
    del y
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"inline": inline, "kept": kept, "faults": faults,
                  "backend": jax.default_backend()}))
"""


def run(mode: str) -> dict:
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("JAX_CPU_ENABLE_ASYNC_DISPATCH", None)
    done = subprocess.run([sys.executable, "-c", PROGRAM, mode], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_cpu_steps_reuse_freed_buffers_instead_of_faulting_in_fresh_pages():
    default, reuse = run("default"), run("reuse")
    assert reuse["inline"] and reuse["kept"], reuse
    # 96 MiB of fresh 4 KiB pages is ~24k faults a call (fewer with transparent huge pages).
    if min(default["faults"]) < 100:
        pytest.skip(f"this machine's default allocator does not fault per call: {default}")
    # Small allocations may still split a freed block now and then (the heap then grows once
    # more): most calls, not every one, reuse it.
    typical = sorted(reuse["faults"])[len(reuse["faults"]) // 2]
    assert typical * 10 < min(default["faults"]), (default, reuse)


def test_a_started_backend_is_left_as_it_is():
    """In a process whose backend has started (a job run from inside another JAX program), the
    CPU client has read its dispatch mode already: nothing is changed, nothing claimed."""
    import jax

    from simclr_jax.cpu import host_memory

    jax.devices()
    before = jax.config.read("jax_cpu_enable_async_dispatch")
    assert not host_memory.run_cpu_steps_inline()
    assert jax.config.read("jax_cpu_enable_async_dispatch") == before
    assert not host_memory.keep_freed_host_memory(False)
