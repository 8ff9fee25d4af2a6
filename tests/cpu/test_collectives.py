"""Several CPU devices in one process (cpu/collectives.py): the flag rule, and the step
that deadlocks under XLA's default schedule running to the end once the jobs' set-up has run."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from simclr_jax.cpu.collectives import SCHEDULER_FLAG, ordered_collectives_flags

ROOT = Path(__file__).resolve().parents[2]
OFF = f"{SCHEDULER_FLAG}=false"


@pytest.mark.parametrize("flags, cpu_devices, expected", [
    ("--xla_force_host_platform_device_count=8", 0,
     f"--xla_force_host_platform_device_count=8 {OFF}"),
    ("", 4, OFF),  # jax_num_cpu_devices=4
    ("--xla_force_host_platform_device_count=1", 0, None),
    ("", -1, None),  # JAX's default: one CPU device
    # XLA takes the last value of a repeated flag.
    ("--xla_force_host_platform_device_count=8 --xla_force_host_platform_device_count=1", 0,
     None),
    # The user's own setting, either way, wins.
    (f"--xla_force_host_platform_device_count=8 {SCHEDULER_FLAG}=true", 0, None),
])
def test_scheduler_off_only_with_several_cpu_devices(flags, cpu_devices, expected):
    assert ordered_collectives_flags(flags, cpu_devices) == expected


# The full-width ResNet-18 CIFAR step at B=128 as bench/train_step.py times it (where the
# deadlock showed up), on 8 simulated devices: two steps.
PROGRAM = """
import sys
sys.path.insert(0, "bench")
from simclr_jax.cpu import collectives
changed = collectives.keep_collectives_in_order()  # as cli.run_command does
import jax
from simclr_jax.config import base_config
from train_step import Ours
c = base_config()
c.update(dict(image_size=32, resnet_depth=18, width_multiplier=1.0, batch_size=128,
              temperature=0.5, blur_prob=0.0, conv_impl="winograd"))
Ours(c).run(1)  # a first step when built, then this one
print("steps done on", jax.device_count(), "devices; flags changed:", changed)
"""


@pytest.mark.slow(90)
def test_full_width_step_on_eight_cpu_devices_completes():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
               JAX_PLATFORMS="cpu")
    done = subprocess.run([sys.executable, "-c", PROGRAM], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=400)
    # Under XLA's default schedule this aborts after 40 s: "Termination timeout for all reduce".
    assert done.returncode == 0, done.stderr[-2000:]
    assert "steps done on 8 devices; flags changed: True" in done.stdout
