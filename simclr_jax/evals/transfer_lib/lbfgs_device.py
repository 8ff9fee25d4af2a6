"""The multinomial regression of logreg.py fitted on the accelerator with optax's L-BFGS, for
feature sets whose fit is too slow on the host (SUN397 at ResNet-50 width: ~100k x 2048, 397
classes, is hours per path on a CPU; bench/transfer_linear.py).

The same mean objective, (1/n) sum CE + lambda/2 ||W||^2 with b free, minimised by
optax.lbfgs (zoom line search) in a jitted while-loop until the gradient's norm is below
`tol` or `max_iter` iterations; each fit starts from the previous solution (warm start along
the path). Features are placed on the devices once, the batch dimension sharded over the mesh,
so the matmuls run where the features are. Single-label only (multi-label sets use scikit-learn).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from simclr_jax.core import parallel


def mean_objective(params: dict, x: jax.Array, y: jax.Array, lam: jax.Array) -> jax.Array:
    """(1/n) sum CE(x W + b, y) + lam/2 ||W||^2."""
    logits = x @ params["w"] + params["b"]
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    return ce + 0.5 * lam * jnp.sum(params["w"] ** 2)


@functools.partial(jax.jit, static_argnames=("max_iter",))
def _minimise(params: dict, x: jax.Array, y: jax.Array, lam: jax.Array, tol: jax.Array, *,
              max_iter: int) -> tuple[dict, jax.Array]:
    """(solution, iterations): optax's documented L-BFGS loop (optax.lbfgs docstring)."""
    fun = functools.partial(mean_objective, x=x, y=y, lam=lam)
    opt = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(fun)

    def step(carry):
        params, state = carry
        value, grad = value_and_grad(params, state=state)
        updates, state = opt.update(grad, state, params, value=value, grad=grad, value_fn=fun)
        return optax.apply_updates(params, updates), state

    def running(carry):
        _, state = carry
        count = optax.tree_utils.tree_get(state, "count")
        grad = optax.tree_utils.tree_get(state, "grad")
        return (count == 0) | ((count < max_iter) & (optax.tree_utils.tree_norm(grad) >= tol))

    params, state = jax.lax.while_loop(running, step, (params, opt.init(params)))
    return params, optax.tree_utils.tree_get(state, "count")


class DeviceLinearModel:
    """logreg.LinearModel's interface (single-label), fitted on the devices of `mesh`."""

    def __init__(self, num_classes: int, max_iter: int, tol: float, mesh):
        self.num_classes, self.max_iter, self.tol, self.mesh = num_classes, max_iter, tol, mesh
        self.multi_label = False
        self._params: dict | None = None
        self._data: tuple | None = None  # (x id, x on devices, y on devices)
        self.iterations = 0

    def _on_devices(self, x: np.ndarray, y: np.ndarray) -> tuple[jax.Array, jax.Array]:
        if self._data is None or self._data[0] is not x:
            n = len(x) - len(x) % self.mesh.devices.size  # an even split over the devices
            if n != len(x):
                # The rows past n would be dropped: keep every row on one device instead.
                sharding = parallel.replicated(self.mesh)
            else:
                sharding = parallel.batch_sharded(self.mesh)
            self._data = (x, jax.device_put(x, sharding), jax.device_put(y, sharding))
        return self._data[1], self._data[2]

    def fit(self, x: np.ndarray, y: np.ndarray, lam: float) -> "DeviceLinearModel":
        """Fits at strength `lam` from the last solution (zeros at first)."""
        xd, yd = self._on_devices(x, y)
        if self._params is None:
            self._params = {"w": jnp.zeros((x.shape[1], self.num_classes), jnp.float32),
                            "b": jnp.zeros((self.num_classes,), jnp.float32)}
        self._params, count = _minimise(self._params, xd, yd, jnp.float32(lam),
                                        jnp.float32(self.tol), max_iter=self.max_iter)
        self.iterations = int(count)
        return self

    def scores(self, x: np.ndarray) -> np.ndarray:
        """(N, C) logits."""
        p = jax.device_get(self._params)
        return np.asarray(x, np.float32) @ p["w"] + p["b"]

    def get_state(self) -> dict[str, np.ndarray]:
        """The solution (to resume the path from a saved point)."""
        return {k: np.asarray(v) for k, v in jax.device_get(self._params).items()}

    def set_state(self, state: dict[str, np.ndarray], num_models: int) -> None:
        """Starts the next fit from a saved solution."""
        del num_models
        self._params = {k: jnp.asarray(state[k]) for k in ("w", "b")}
