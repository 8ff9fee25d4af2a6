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


def _official_nt_xent(z1: np.ndarray, z2: np.ndarray, tau: float) -> dict[str, float]:
    """The official add_contrastive_loss (objective.py) transcribed to float64 numpy, one
    replica: hidden1 = view 1, hidden2 = view 2, l2-normalised; logits_aa / logits_bb with the
    diagonal masked by -LARGE_NUM; loss = mean CE([ab, aa]) + mean CE([ba, bb]). Plus the
    official contrast_acc and contrast_entropy (model.py), which read logits_ab only."""
    large_num = 1e9
    h1 = z1 / np.linalg.norm(z1, axis=1, keepdims=True)
    h2 = z2 / np.linalg.norm(z2, axis=1, keepdims=True)
    n = len(h1)
    labels = np.eye(n, 2 * n)  # one_hot(range(n), 2n)
    masks = np.eye(n)
    logits_aa = h1 @ h1.T / tau - masks * large_num
    logits_bb = h2 @ h2.T / tau - masks * large_num
    logits_ab = h1 @ h2.T / tau
    logits_ba = h2 @ h1.T / tau

    def softmax_cross_entropy(onehot, logits):  # tf.losses.softmax_cross_entropy, mean
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        return float(np.mean(-(onehot * log_probs).sum(axis=1)))

    loss_a = softmax_cross_entropy(labels, np.concatenate([logits_ab, logits_aa], 1))
    loss_b = softmax_cross_entropy(labels, np.concatenate([logits_ba, logits_bb], 1))
    prob = np.exp(logits_ab - logits_ab.max(1, keepdims=True))
    prob = prob / prob.sum(1, keepdims=True)
    return {"loss": loss_a + loss_b,
            "contrast_acc": float(np.mean(np.argmax(logits_ab, 1) == np.arange(n))),
            "contrast_entropy": float(-np.mean(np.sum(prob * np.log(prob + 1e-8), -1)))}


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
def official_nt_xent() -> Callable[[np.ndarray, np.ndarray, float], dict[str, float]]:
    """official_nt_xent(z1, z2, tau): {'loss', 'contrast_acc', 'contrast_entropy'} of the
    official TF code, transcribed to float64 numpy."""
    return _official_nt_xent


@pytest.fixture(scope="session")
def numeric_grad() -> Callable[..., np.ndarray]:
    """numeric_grad(f, x, eps=1e-6): central finite differences of a scalar f at x."""
    return _numeric_grad
