"""Gaussian blur in jnp (device side): the paper's ImageNet blur (p = 0.5 per view)."""

import jax
import jax.numpy as jnp


def gaussian_blur(key: jax.Array, x: jnp.ndarray, sigma_range=(0.1, 2.0)) -> jnp.ndarray:
    """Separable Gaussian blur, kernel 10% of the image side, sigma ~ U(sigma_range).

    Zero 'SAME' padding, as the official depthwise_conv2d implementation.
    """
    radius = x.shape[0] // 10 // 2
    if radius == 0:
        return x
    sigma = jax.random.uniform(key, (), minval=sigma_range[0], maxval=sigma_range[1])
    taps = jnp.arange(-radius, radius + 1, dtype=x.dtype)
    w = jnp.exp(-(taps**2) / (2.0 * sigma**2))
    w = w / jnp.sum(w)
    for axis in (0, 1):
        pad = [(0, 0)] * x.ndim
        pad[axis] = (radius, radius)
        xp = jnp.pad(x, pad)
        size = x.shape[axis]
        x = sum(w[t] * jax.lax.slice_in_dim(xp, t, t + size, axis=axis)
                for t in range(2 * radius + 1))
    return x
