"""Both views of a training batch, on the device: the standard SimCLR pipeline or ablation ops.

The host has cropped and flipped each view (augment/crop.py); here, inside the jitted train
step, each view gets colour jitter (p = 0.8), greyscale (p = 0.2) and, for ImageNet, blur
(p = 0.5). Every example draws from its own key, fold_in(key, its index in the *global* batch),
so the draw does not depend on how the batch is split over devices.
"""

import jax
import jax.numpy as jnp
import ml_collections

from simclr_jax.augment import crop, ops
from simclr_jax.augment.blur import gaussian_blur
from simclr_jax.augment.color import color_jitter, to_grayscale


def augment_view(key: jax.Array, image: jnp.ndarray, strength: float, jitter_prob: float,
                 grey_prob: float, blur_prob: float, jitter_impl: str = "simclrv2"
                 ) -> jnp.ndarray:
    """The device part of one SimCLR view: [0,1] float image in, [0,1] float image out."""
    k_apply_j, k_j, k_apply_g, k_apply_b, k_b = jax.random.split(key, 5)
    jittered = color_jitter(k_j, image, strength, jitter_impl)
    x = jnp.where(jax.random.uniform(k_apply_j) < jitter_prob, jittered, image)
    x = jnp.where(jax.random.uniform(k_apply_g) < grey_prob, to_grayscale(x), x)
    if blur_prob > 0:
        x = jnp.where(jax.random.uniform(k_apply_b) < blur_prob, gaussian_blur(k_b, x), x)
    return jnp.clip(x, 0.0, 1.0)

def augment_batch(key: jax.Array, images: jnp.ndarray, strength: float, jitter_prob: float = 0.8,
                  grey_prob: float = 0.2, blur_prob: float = 0.0, jitter_impl: str = "simclrv2"
                  ) -> jnp.ndarray:
    """Augments a uint8 batch (B, H, W, 3); example i uses fold_in(key, i)."""
    x = images.astype(jnp.float32) / 255.0
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(images.shape[0]))
    return jax.vmap(lambda k, im: augment_view(k, im, strength, jitter_prob, grey_prob,
                                               blur_prob, jitter_impl))(keys, x)


def augment_views(config: ml_collections.ConfigDict, step: jax.Array,
                  batch: dict[str, jax.Array]) -> jnp.ndarray:
    """Device augmentation of both views, interleaved as (2B, H, W, 3): row 2i and 2i+1 are
    image i's views, so the reshape is local to each device's shard (no resharding)."""
    key = jax.random.fold_in(jax.random.PRNGKey(config.seed), step)
    if config.crop_on == "device":  # the host sent one canvas per image
        batch = {**batch, **crop.crop_views(jax.random.fold_in(key, 3), batch,
                                            config.image_size, config.crop_area_min)}
    if config.augment_on == "host":  # tf.data already did everything
        views = [batch[f"view{v}"].astype(jnp.float32) / 255.0 for v in (1, 2)]
    elif ops.uses_default(config):
        views = [augment_batch(jax.random.fold_in(key, v), batch[f"view{v}"],
                               config.color_jitter_strength, config.color_jitter_prob,
                               config.grayscale_prob, config.blur_prob,
                               config.color_jitter_impl)
                 for v in (1, 2)]
    else:  # per-view op lists (augmentation ablations); the host did not crop
        views = [ops.augment_batch(jax.random.fold_in(key, v), batch[f"view{v}"],
                                   config[f"view{v}_ops"], config) for v in (1, 2)]
    x = jnp.stack(views, axis=1)
    return x.reshape((-1,) + x.shape[2:])
