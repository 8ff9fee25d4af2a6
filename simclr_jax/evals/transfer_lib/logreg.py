"""L2-regularised logistic regression on frozen features, fitted with L-BFGS along a path of
regularisation strengths (Kornblith et al. 2019; SimCLR appendix B.8).

The fit is scikit-learn's LogisticRegression(solver='lbfgs'): transfer features fit in host
memory (CIFAR-10 at ResNet-50 width, 50,000 x 2048 float32, is 0.4 GB; SUN397's ~100k x 2048
0.8 GB), its multinomial loss and L-BFGS are tested and threaded, and it warm-starts. Our
strength lambda is that of the per-example mean objective,

    (1/n) sum_i CE(W x_i + b, y_i) + (lambda / 2) ||W||^2      (b not penalised),

and scikit-learn minimises C sum_i CE_i + (1/2) ||W||^2, the same minimiser for
C = 1 / (n lambda). A multi-label dataset fits one binary (sigmoid) regression per class with
the same mapping. The path runs from the strongest regularisation to the weakest, each fit
starting from the previous solution (warm start): neighbouring solutions are close, so each
fit needs few L-BFGS iterations.
"""

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits


def lambdas(num: int, low: float, high: float) -> np.ndarray:
    """`num` log-spaced strengths from `high` down to `low` (the order the path is fitted in)."""
    return np.logspace(np.log10(high), np.log10(low), num)


def c_of(lam: float, num_examples: int) -> float:
    """scikit-learn's C for strength `lam` of the mean objective over `num_examples`."""
    return 1.0 / (num_examples * lam)


class LinearModel:
    """One multinomial regression (single-label) or one binary regression per class
    (multi-label), refitted at each strength from its current solution."""

    def __init__(self, multi_label: bool, max_iter: int, tol: float, threads: int = 0):
        self.multi_label, self.max_iter, self.tol = multi_label, max_iter, tol
        # OpenMP / BLAS threads of the fit (0: the libraries' default, every core). On a
        # machine shared with other jobs one thread is far faster: OpenMP's spinning
        # barriers stall when the cores are oversubscribed (bench/transfer_linear.py).
        self.threads = threads
        self._models: list[LogisticRegression | float] = []
        self.iterations = 0  # L-BFGS iterations of the last fit, summed over its models

    def _new(self) -> LogisticRegression:
        return LogisticRegression(C=1.0, solver="lbfgs", max_iter=self.max_iter, tol=self.tol,
                                  warm_start=True)

    def fit(self, x: np.ndarray, y: np.ndarray, lam: float) -> "LinearModel":
        """Fits at strength `lam` (y: int labels, or (N, C) multi-hot), from the last fit."""
        c = c_of(lam, len(x))
        columns = [y] if not self.multi_label else [y[:, k] for k in range(y.shape[1])]
        if not self._models:
            self._models = [self._new() for _ in columns]
        self.iterations = 0
        with warnings.catch_warnings(), threadpool_limits(self.threads or None):
            # Past max_iter the solution is still the best L-BFGS found; the path moves on.
            warnings.simplefilter("ignore", ConvergenceWarning)
            for k, target in enumerate(columns):
                if self.multi_label and np.all(target == target[0]):
                    # One value in train: scikit-learn cannot fit it; a constant score ranks
                    # every test example alike (logit of the train frequency).
                    self._models[k] = 10.0 if target[0] else -10.0
                    continue
                model = self._models[k]
                if not isinstance(model, LogisticRegression):
                    model = self._models[k] = self._new()
                model.set_params(C=c).fit(x, target)
                self.iterations += int(np.max(model.n_iter_))
        return self

    def scores(self, x: np.ndarray) -> np.ndarray:
        """(N, C) scores: logits of each class (single-label) or each class's own logit."""
        if not self.multi_label:
            return self._models[0].decision_function(x) if len(
                self._models[0].classes_) > 2 else _binary_logits(self._models[0], x)
        cols = [np.full(len(x), m) if not isinstance(m, LogisticRegression)
                else m.decision_function(x) for m in self._models]
        return np.stack(cols, axis=1)

    def get_state(self) -> dict[str, np.ndarray]:
        """Coefficients and intercepts (to resume the path from a saved point)."""
        out = {}
        for k, m in enumerate(self._models):
            if isinstance(m, LogisticRegression):
                out[f"coef_{k}"], out[f"intercept_{k}"] = m.coef_, m.intercept_
                out[f"classes_{k}"] = m.classes_
        return out

    def set_state(self, state: dict[str, np.ndarray], num_models: int) -> None:
        """Starts the next fit from a saved solution."""
        self._models = []
        for k in range(num_models):
            model = self._new()
            if f"coef_{k}" in state:
                model.coef_ = np.array(state[f"coef_{k}"])
                model.intercept_ = np.array(state[f"intercept_{k}"])
                model.classes_ = np.array(state[f"classes_{k}"])
            self._models.append(model)


def _binary_logits(model: LogisticRegression, x: np.ndarray) -> np.ndarray:
    """A two-class dataset: scikit-learn fits one logit; as (N, 2) scores [0, logit]."""
    logit = model.decision_function(x)
    return np.stack([np.zeros_like(logit), logit], axis=1)


def mean_objective(x: np.ndarray, y: np.ndarray, coef: np.ndarray, intercept: np.ndarray,
                   lam: float) -> float:
    """(1/n) sum CE + lam/2 ||coef||^2 of a multinomial model (coef (C, D)): what the path
    minimises, for checks."""
    logits = x @ coef.T + intercept
    logits = logits - logits.max(axis=1, keepdims=True)
    log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    return float(-log_p[np.arange(len(y)), y].mean() + 0.5 * lam * np.sum(coef ** 2))
