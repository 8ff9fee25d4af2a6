"""The regularisation path's logistic regression against an independent minimisation of the
mean objective (scipy L-BFGS on numpy gradients): the lambda <-> C mapping, the objective,
the predictions; and warm starts along the path reaching the cold-start solutions."""

import numpy as np
import pytest
from scipy.optimize import minimize

from simclr_jax.evals.transfer_lib import logreg


def _data(seed=0, n=400, d=12, c=4):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(c, d))
    y = rng.integers(0, c, n)
    x = centres[y] * 0.7 + rng.normal(size=(n, d))
    return x, y


def _scipy_fit(x, y, lam):
    """argmin (1/n) sum CE + lam/2 ||W||^2 (b free), written here in numpy."""
    n, d = x.shape
    c = y.max() + 1
    onehot = np.eye(c)[y]

    def f(theta):
        w, b = theta[:c * d].reshape(c, d), theta[c * d:]
        z = x @ w.T + b
        z -= z.max(1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(1, keepdims=True)
        loss = -np.mean(np.log(p[np.arange(n), y])) + 0.5 * lam * np.sum(w ** 2)
        g = (p - onehot) / n
        return loss, np.concatenate([(g.T @ x + lam * w).ravel(), g.sum(0)])

    res = minimize(f, np.zeros(c * d + c), jac=True, method="L-BFGS-B",
                   options={"maxiter": 5000, "gtol": 1e-10, "ftol": 1e-15})
    return res.x[:c * d].reshape(c, d), res.x[c * d:], res.fun


@pytest.mark.parametrize("lam", [1e-3, 1e-1])
def test_fit_minimises_the_mean_objective_with_c_of_lambda(lam):
    x, y = _data()
    w, b, best = _scipy_fit(x, y, lam)
    model = logreg.LinearModel(multi_label=False, max_iter=5000, tol=1e-10).fit(x, y, lam)
    (m,) = model._models
    ours = logreg.mean_objective(x, y, m.coef_, m.intercept_, lam)
    # sklearn's multinomial coef is the symmetric parametrisation (rows sum to zero at the
    # optimum of an L2 penalty), as is the scipy one: the same minimiser.
    assert ours == pytest.approx(best, abs=1e-4)
    assert ours <= best + 1e-6
    np.testing.assert_array_equal(model.scores(x).argmax(1), (x @ w.T + b).argmax(1))
    assert logreg.c_of(lam, len(x)) == pytest.approx(1 / (len(x) * lam))


def test_a_wrong_mapping_would_be_caught():
    """C = 1 / lambda (forgetting n) minimises another objective, far off the scipy optimum."""
    x, y = _data()
    lam = 1e-1
    _, _, best = _scipy_fit(x, y, lam)
    from sklearn.linear_model import LogisticRegression

    wrong = LogisticRegression(C=1 / lam, max_iter=5000, tol=1e-10).fit(x, y)
    assert logreg.mean_objective(x, y, wrong.coef_, wrong.intercept_, lam) > best + 1e-2


def test_warm_started_path_reaches_the_cold_solutions():
    x, y = _data(seed=1)
    warm = logreg.LinearModel(multi_label=False, max_iter=5000, tol=1e-8)
    for lam in logreg.lambdas(6, 1e-4, 1e1):
        warm.fit(x, y, lam)
        cold = logreg.LinearModel(multi_label=False, max_iter=5000, tol=1e-8).fit(x, y, lam)
        a, b = warm._models[0], cold._models[0]
        assert logreg.mean_objective(x, y, a.coef_, a.intercept_, lam) == pytest.approx(
            logreg.mean_objective(x, y, b.coef_, b.intercept_, lam), abs=1e-6)


def test_lambdas_are_log_spaced_from_strong_to_weak():
    values = logreg.lambdas(45, 1e-6, 1e5)
    assert len(values) == 45 and values[0] == pytest.approx(1e5) and values[-1] == pytest.approx(
        1e-6)
    np.testing.assert_allclose(np.diff(np.log10(values)), -11 / 44)


def test_multi_label_fits_one_binary_regression_per_class():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 8))
    targets = (x[:, :3] + 0.3 * rng.normal(size=(300, 3)) > 0).astype(int)
    targets[:, 2] = 0  # a class without positives in train: a constant score, no crash
    model = logreg.LinearModel(multi_label=True, max_iter=1000, tol=1e-8).fit(x, targets, 1e-3)
    s = model.scores(x)
    assert s.shape == (300, 3)
    assert np.mean((s[:, :2] > 0) == targets[:, :2].astype(bool)) > 0.9
    assert np.all(s[:, 2] == s[0, 2])
