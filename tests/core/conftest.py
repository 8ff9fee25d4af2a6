"""Fixtures of the core tests: the independent numpy references of the loss tests."""

from collections.abc import Callable

import numpy as np
import pytest


def _naive_nt_xent(z1: np.ndarray, z2: np.ndarray, tau: float) -> float:
    """Textbook NT-Xent: views interleaved 2k, 2k+1; loop over all 2N anchors."""
    z = np.empty((2 * len(z1), z1.shape[1]), np.float64)
    z[0::2], z[1::2] = z1, z2
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    total = 0.0
    for i in range(len(z)):
        j = i + 1 if i % 2 == 0 else i - 1
        sims = np.array([z[i] @ z[k] / tau for k in range(len(z))])
        denominator = sum(np.exp(sims[k]) for k in range(len(z)) if k != i)
        total += -np.log(np.exp(sims[j]) / denominator)
    return total / len(z)


def _numeric_grad(f, x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    g = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        d = np.zeros_like(x)
        d[idx] = eps
        g[idx] = (f(x + d) - f(x - d)) / (2 * eps)
    return g


@pytest.fixture(scope="session")
def naive_nt_xent() -> Callable[[np.ndarray, np.ndarray, float], float]:
    """naive_nt_xent(z1, z2, tau): NT-Xent in float64 numpy, a loop over the 2N anchors."""
    return _naive_nt_xent


@pytest.fixture(scope="session")
def numeric_grad() -> Callable[..., np.ndarray]:
    """numeric_grad(f, x, eps=1e-6): central finite differences of a scalar f at x."""
    return _numeric_grad
