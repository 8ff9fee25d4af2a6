"""Dense peak TFLOP/s of one JAX device, by the exact `device_kind` JAX reports.

Whole names, never substrings: "NVIDIA L40S" is not an "NVIDIA L4" (121 vs 362 TFLOP/s) and
"NVIDIA H100 PCIe" not the SXM part (756 vs 989). TPU names are those of jax's own tables
(jax/_src/mesh_utils.py, pallas/mosaic/tpu_info.py); GPU names are the CUDA device names
(nvidia-smi's). A kind missing here falls back to a measured matmul (accelerator_step.py).

Figures are the vendors' dense (no sparsity) numbers per device. TPU v2, v3 and TPU7x expose
each TensorCore as a device (half a chip); v4 and v5p join a chip's two cores (megacore).
"""

# bf16 (and f32 on TPU, whose default matmul precision runs bf16 passes).
BF16 = {
    "TPU v2": 22.5, "TPU v3": 61.5, "TPU v4": 275.0, "TPU v5 lite": 197.0, "TPU v5e": 197.0,
    "TPU v5": 459.0, "TPU v5p": 459.0, "TPU v6 lite": 918.0, "TPU v6e": 918.0,
    "TPU7x": 2307.0 / 2,
    "NVIDIA A100-SXM4-40GB": 312.0, "NVIDIA A100-SXM4-80GB": 312.0,
    "NVIDIA A100-PCIE-40GB": 312.0, "NVIDIA A100 80GB PCIe": 312.0,
    "NVIDIA H100 80GB HBM3": 989.0, "NVIDIA H100 PCIe": 756.0, "NVIDIA H100 NVL": 835.0,
    "NVIDIA H200": 989.0, "NVIDIA H200 NVL": 835.0,
    "NVIDIA GH200 480GB": 989.0, "NVIDIA GH200 144G HBM3e": 989.0,
    "NVIDIA B200": 2250.0, "NVIDIA GB200": 2500.0,
    "NVIDIA L4": 121.0, "NVIDIA L40": 181.0, "NVIDIA L40S": 362.0, "NVIDIA A10": 125.0,
}
# f32 on GPUs: the CUDA-core (non-tensor-core) figure.
F32_GPU = {
    "NVIDIA A100-SXM4-40GB": 19.5, "NVIDIA A100-SXM4-80GB": 19.5,
    "NVIDIA A100-PCIE-40GB": 19.5, "NVIDIA A100 80GB PCIe": 19.5,
    "NVIDIA H100 80GB HBM3": 67.0, "NVIDIA H100 PCIe": 51.0, "NVIDIA H100 NVL": 60.0,
    "NVIDIA H200": 67.0, "NVIDIA H200 NVL": 60.0,
    "NVIDIA GH200 480GB": 67.0, "NVIDIA GH200 144G HBM3e": 67.0,
    "NVIDIA B200": 75.0, "NVIDIA GB200": 80.0,
    "NVIDIA L4": 30.3, "NVIDIA L40": 90.5, "NVIDIA L40S": 91.6, "NVIDIA A10": 31.2,
    "Tesla V100-SXM2-16GB": 15.7, "Tesla V100-SXM2-32GB": 15.7,
    "Tesla V100-PCIE-16GB": 14.0, "Tesla V100-PCIE-32GB": 14.0,
}


def table_peak(device_kind: str, platform: str, dtype: str) -> float | None:
    """Dense peak TFLOP/s of a `device_kind` device for `dtype`, or None if not tabled."""
    table = BF16 if dtype == "bfloat16" or platform == "tpu" else F32_GPU
    return table.get(device_kind.strip())
