"""Batch chunks (cpu/chunks.py): how many, and every image back in its place."""

import jax
import jax.numpy as jnp
import numpy as np

from simclr_jax.cpu import chunks


def test_num_chunks_floor_kernel_term_and_divisor_of_the_per_device_batch():
    devices = jax.device_count()  # 8 simulated (tests/conftest.py)
    image = (32, 32, 16)  # 64 KiB in float32
    # 64 images a device = 4 MiB: 1 MiB chunks -> 4.
    assert chunks.num_chunks((64 * devices, *image), 0, 4, 1 << 20) == 4
    # A kernel of 16 MiB raises the floor to 4 MiB: one chunk.
    assert chunks.num_chunks((64 * devices, *image), 16 << 20, 4, 1 << 20) == 1
    # 112 images a device = 7 MiB -> 7 chunks of 16 images.
    assert chunks.num_chunks((112 * devices, *image), 0, 4, 1 << 20) == 7
    # 5 images a device over a 128 KiB floor: 2 chunks by size, but 5 is prime -> 1.
    assert chunks.num_chunks((5 * devices, *image), 0, 4, 2 << 16) == 1
    # A batch that does not split over the devices is chunked as a whole.
    assert chunks.num_chunks((6, *image), 0, 4, 1 << 16) == 6


def test_map_chunks_puts_every_image_back_in_place():
    x = jnp.arange(12 * 3, dtype=jnp.float32).reshape(12, 3)
    out = jax.jit(lambda x: chunks.map_chunks(lambda c: c * 2 + jnp.arange(3.0), x, 4))(x)
    np.testing.assert_array_equal(out, x * 2 + jnp.arange(3.0))
