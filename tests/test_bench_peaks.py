"""bench/peaks.py: the peak each device kind gets, matched by whole name.

The expected figures are the vendors' dense per-device numbers, written out here from their
datasheets and Google's TPU pages (not read from the table under test)."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def peaks():
    spec = importlib.util.spec_from_file_location("peaks", ROOT / "bench" / "peaks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("kind, platform, dtype, tflops", [
    # device_kind strings as JAX reports them (TPU: jax's mesh_utils / tpu_info names).
    ("TPU v4", "tpu", "bfloat16", 275.0),
    ("TPU v5 lite", "tpu", "bfloat16", 197.0),  # v5e
    ("TPU v5", "tpu", "float32", 459.0),  # v5p; f32 matmuls run as bf16 passes on TPU
    ("TPU v6 lite", "tpu", "bfloat16", 918.0),  # v6e (Trillium)
    ("TPU7x", "tpu", "bfloat16", 1153.5),  # 2307 per chip, two devices per chip
    ("TPU v3", "tpu", "bfloat16", 61.5),  # 123 per chip, two devices per chip
    ("NVIDIA L40S", "gpu", "bfloat16", 362.0),  # not the L4's 121
    ("NVIDIA L4", "gpu", "bfloat16", 121.0),
    ("NVIDIA H100 PCIe", "gpu", "bfloat16", 756.0),  # not the SXM's 989
    ("NVIDIA H100 80GB HBM3", "gpu", "bfloat16", 989.0),  # SXM
    ("NVIDIA H100 NVL", "gpu", "bfloat16", 835.0),
    ("NVIDIA H200", "gpu", "bfloat16", 989.0),
    ("NVIDIA A100-SXM4-80GB", "gpu", "bfloat16", 312.0),
    ("NVIDIA B200", "gpu", "bfloat16", 2250.0),
    ("NVIDIA GB200", "gpu", "bfloat16", 2500.0),
    ("NVIDIA H100 PCIe", "gpu", "float32", 51.0),
    ("NVIDIA L40S", "gpu", "float32", 91.6),
])
def test_each_device_kind_gets_its_own_peak(peaks, kind, platform, dtype, tflops):
    assert peaks.table_peak(kind, platform, dtype) == pytest.approx(tflops)


@pytest.mark.parametrize("kind, platform, dtype", [
    ("NVIDIA H100", "gpu", "bfloat16"),  # a prefix of several parts: which one is unknown
    ("NVIDIA L40S-48Q", "gpu", "bfloat16"),  # a vGPU profile: not the whole card
    ("TPU v5 lite pod", "tpu", "bfloat16"),
    ("Tesla V100-SXM2-16GB", "gpu", "bfloat16"),  # no bf16 tensor cores: measure instead
    ("cpu", "cpu", "float32"),
])
def test_a_kind_not_in_the_table_is_measured_not_guessed(peaks, kind, platform, dtype):
    assert peaks.table_peak(kind, platform, dtype) is None
