"""Test setup: 8 simulated CPU devices (before JAX starts), quiet TF, a shared TFDS dir."""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tfds_dir(tmp_path_factory) -> str:
    """One TFDS data_dir per test session (the embedded digits get prepared there once)."""
    return str(tmp_path_factory.mktemp("tfds"))
