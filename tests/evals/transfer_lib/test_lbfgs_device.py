"""The on-device optax L-BFGS fit against scikit-learn's LogisticRegression on the same
features and strength (C = 1 / (n lambda)): the same predictions, the objective within 1e-4."""

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from simclr_jax.core import parallel
from simclr_jax.evals.transfer_lib import lbfgs_device, logreg


def _data(seed=0, n=400, d=12, c=4):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(c, d))
    y = rng.integers(0, c, n)
    return (centres[y] * 0.7 + rng.normal(size=(n, d))).astype(np.float32), y.astype(np.int32)


@pytest.mark.parametrize("lam", [1e-3, 1e-1])
def test_device_fit_matches_sklearn(lam):
    x, y = _data()
    ref = LogisticRegression(C=1 / (len(x) * lam), max_iter=5000, tol=1e-10).fit(
        x.astype(np.float64), y)
    model = lbfgs_device.DeviceLinearModel(4, max_iter=2000, tol=1e-6,
                                           mesh=parallel.make_mesh())
    model.fit(x, y, lam)
    p = model.get_state()
    ours = logreg.mean_objective(x.astype(np.float64), y, p["w"].T.astype(np.float64),
                                 p["b"].astype(np.float64), lam)
    theirs = logreg.mean_objective(x.astype(np.float64), y, ref.coef_, ref.intercept_, lam)
    assert ours == pytest.approx(theirs, abs=1e-4)
    np.testing.assert_array_equal(model.scores(x).argmax(1), ref.predict(x))


def test_warm_start_along_the_path_and_resume():
    x, y = _data(seed=1, n=403)  # not a multiple of the 8 devices: kept replicated
    mesh = parallel.make_mesh()
    warm = lbfgs_device.DeviceLinearModel(4, max_iter=2000, tol=1e-6, mesh=mesh)
    for lam in logreg.lambdas(4, 1e-3, 1e0):
        warm.fit(x, y, lam)
    resumed = lbfgs_device.DeviceLinearModel(4, max_iter=2000, tol=1e-6, mesh=mesh)
    resumed.set_state(warm.get_state(), 1)
    resumed.fit(x, y, 1e-3)
    assert resumed.iterations <= 2  # already at the optimum
    cold = lbfgs_device.DeviceLinearModel(4, max_iter=2000, tol=1e-6, mesh=mesh).fit(x, y, 1e-3)
    np.testing.assert_array_equal(warm.scores(x).argmax(1), cold.scores(x).argmax(1))
