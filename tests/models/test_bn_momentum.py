"""ResNet.bn_momentum (the transfer fine-tune's max(1 - 10/s, 0.9)) is the decay of every BN's
moving statistics: new = m * old + (1 - m) * batch statistic."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from simclr_jax.models.resnet import BN_MOMENTUM, ResNet


@pytest.mark.parametrize("momentum", [BN_MOMENTUM, 0.5])
def test_moving_mean_uses_bn_momentum(momentum):
    model = ResNet(depth=18, width_multiplier=0.125, cifar_stem=True, bn_momentum=momentum)
    x = jax.random.uniform(jax.random.PRNGKey(0), (4, 8, 8, 3))
    variables = model.init(jax.random.PRNGKey(1), x, train=False)
    _, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
    conv = variables["params"]["stem_conv"]["kernel"]
    y = jax.lax.conv_general_dilated(x, conv, (1, 1), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    batch_mean = np.asarray(jnp.mean(y, axis=(0, 1, 2)))
    old = np.asarray(variables["batch_stats"]["stem_bn"]["mean"])
    new = np.asarray(updates["batch_stats"]["stem_bn"]["mean"])
    np.testing.assert_allclose(new, momentum * old + (1 - momentum) * batch_mean, atol=1e-5)
