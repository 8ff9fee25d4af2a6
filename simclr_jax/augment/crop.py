"""The paper's random resized crop (+ flip): one sampler, on the host or on the accelerator.

Window: Inception-style, area in (area_min, 1) of the image, aspect ratio in 3/4..4/3, drawn by
TF's sample_distorted_bounding_box (100 attempts, else the whole image); the window is resized
bicubic (Keys a = -0.5, no antialiasing) to the view size, then flipped with p = 0.5.

- Host (the default, tf.data): `crop_and_flip`. For JPEGs only the window is decoded.
- Device (`crop_on='device'`): the host decodes each image once into a fixed canvas
  (tf_image.to_canvas) and `crop_views` crops both views in jnp. `sample_window` is a port of
  TF's sampler, quirks included, and `crop_resize` is TF's bicubic resize restricted to the
  window, as two small dense matmuls; so for the same window both placements agree up to float
  rounding, and the windows follow the same distribution (tests check both).
- The augmentation ablations' 'crop' op (augment/ops.py) is `random_resized_crop`: the device
  sampler and resize on a [0, 1] image, so the experiments crop as the default pipeline does.

Every device draw takes fold_in(key, index in the global batch): independent of the sharding.
"""

import jax
import jax.numpy as jnp
import tensorflow as tf

from simclr_jax.augment.tf_image import Window, decode_window, fold, resize

CROP_ASPECT_RANGE = (3 / 4, 4 / 3)
# sample_distorted_bounding_box rejects crops covering < 10% of the image (official code's value).
CROP_MIN_OBJECT_COVERED = 0.1
CROP_MAX_ATTEMPTS = 100


# ---- Host (tf.data) ----------------------------------------------------------------------------

def random_window(shape: tf.Tensor, seed: tf.Tensor, area_min: float) -> Window:
    """Inception-style crop window: area in (area_min, 1), aspect 3/4..4/3 (whole image if no
    valid sample in 100 attempts)."""
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.concat([shape, [3]], 0), bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
        seed=seed, min_object_covered=CROP_MIN_OBJECT_COVERED,
        aspect_ratio_range=CROP_ASPECT_RANGE, area_range=(area_min, 1.0),
        max_attempts=CROP_MAX_ATTEMPTS, use_image_if_no_bounding_boxes=True)
    return begin[:2], size[:2]

def crop_and_flip(image: tf.Tensor, seed: tf.Tensor, size: int, area_min: float) -> tf.Tensor:
    """One view's geometry: random resized crop (bicubic) to size x size, then a random flip.

    The crop and flip seeds are those of the original pipeline (fold 0 and 1 of `seed`).
    """
    window = decode_window(image, lambda s: random_window(s, fold(seed, 0), area_min))
    view = resize(window, size)
    return tf.image.stateless_random_flip_left_right(view, fold(seed, 1))


# ---- Device (jnp) ------------------------------------------------------------------------------

def _round(x: jnp.ndarray) -> jnp.ndarray:
    """lrintf: round half to even, as TF's sampler."""
    return jnp.round(x).astype(jnp.int32)

def sample_window(key: jax.Array, height: jnp.ndarray, width: jnp.ndarray, area_min: float,
                  attempts: int = CROP_MAX_ATTEMPTS) -> tuple[jnp.ndarray, jnp.ndarray]:
    """(begin (2,), size (2,)) int32 of a crop of an (height, width) image, drawn as
    tf.image.sample_distorted_bounding_box draws it (GenerateRandomCrop): all attempts are
    drawn at once and the first valid one is kept; the whole image if none is valid."""
    k_ar, k_h, k_y, k_x = jax.random.split(key, 4)
    h_img, w_img = height.astype(jnp.float32), width.astype(jnp.float32)
    aspect = jax.random.uniform(k_ar, (attempts,), minval=CROP_ASPECT_RANGE[0],
                                maxval=CROP_ASPECT_RANGE[1])
    min_area, max_area = area_min * w_img * h_img, w_img * h_img
    h = _round(jnp.sqrt(min_area / aspect))
    max_h = _round(jnp.sqrt(max_area / aspect))
    # The smallest max_h with round(max_h * aspect) <= width, when max_h is too wide.
    fit = ((w_img + 0.5 - 1e-7) / aspect).astype(jnp.int32)
    fit = jnp.where(_round(fit * aspect) > width, fit - 1, fit)
    max_h = jnp.where(_round(max_h * aspect) > width, fit, max_h)
    max_h = jnp.minimum(max_h, height)
    h = jnp.minimum(h, max_h)
    span = jnp.maximum(max_h - h, 0) + 1  # uniform integer in [h, max_h]
    h = h + jnp.floor(jax.random.uniform(k_h, (attempts,)) * span).astype(jnp.int32)
    w = _round(h * aspect)
    area = (w * h).astype(jnp.float32)
    bigger = area < min_area  # TF nudges the height by one against rounding errors
    h = jnp.where(bigger, h + 1, h)
    w = jnp.where(bigger, _round(h * aspect), w)
    area = (w * h).astype(jnp.float32)
    smaller = area > max_area
    h = jnp.where(smaller, h - 1, h)
    w = jnp.where(smaller, _round(h * aspect), w)
    area = (w * h).astype(jnp.float32)
    valid = ((area >= min_area) & (area <= max_area) & (w <= width) & (h <= height)
             & (w > 0) & (h > 0) & (area >= CROP_MIN_OBJECT_COVERED * max_area))
    # TF draws y in [0, H - h) (never touching the bottom edge unless h == H); same for x.
    y = jnp.floor(jax.random.uniform(k_y, (attempts,)) * jnp.maximum(height - h, 1))
    x = jnp.floor(jax.random.uniform(k_x, (attempts,)) * jnp.maximum(width - w, 1))
    first = jnp.argmax(valid)
    ok = valid[first]
    begin = jnp.where(ok, jnp.stack([y[first], x[first]]).astype(jnp.int32), 0)
    size = jnp.where(ok, jnp.stack([h[first], w[first]]), jnp.stack([height, width]))
    return begin, size.astype(jnp.int32)

def _keys_cubic(t: jnp.ndarray) -> jnp.ndarray:
    """Keys cubic kernel with a = -0.5 (TF's and jax.image's 'bicubic')."""
    t = jnp.abs(t)
    near = ((1.5 * t - 2.5) * t) * t + 1.0
    far = ((-0.5 * t + 2.5) * t - 4.0) * t + 2.0
    return jnp.where(t < 1.0, near, jnp.where(t < 2.0, far, 0.0))

def _resize_weights(start: jnp.ndarray, length: jnp.ndarray, extent: int,
                    out: int) -> jnp.ndarray:
    """(out, extent) weights resizing the window [start, start + length) of an axis of
    `extent` pixels to `out` pixels; taps outside the window are dropped and the rest
    renormalised, which is what TF's resize does at the edges of the cropped image."""
    centre = (jnp.arange(out, dtype=jnp.float32) + 0.5) * (length / out)  # window coordinates
    j = jnp.arange(extent, dtype=jnp.float32) - start
    w = _keys_cubic(j[None, :] + 0.5 - centre[:, None])
    w = jnp.where((j >= 0) & (j < length), w, 0.0)
    total = jnp.sum(w, axis=1, keepdims=True)
    return w / jnp.where(jnp.abs(total) > 1e-3, total, 1.0)

def crop_resize(canvas: jnp.ndarray, begin: jnp.ndarray, size: jnp.ndarray,
                out: int) -> jnp.ndarray:
    """The window (begin, size) of a float canvas (C, C, 3), bicubic-resized to out x out,
    rounded and clipped to [0, 255] like the host's uint8 views."""
    wy = _resize_weights(begin[0].astype(jnp.float32), size[0].astype(jnp.float32),
                         canvas.shape[0], out)
    wx = _resize_weights(begin[1].astype(jnp.float32), size[1].astype(jnp.float32),
                         canvas.shape[1], out)
    y = jnp.einsum("oh,hwc,pw->opc", wy, canvas, wx, precision=jax.lax.Precision.HIGHEST)
    return jnp.clip(jnp.round(y), 0.0, 255.0)

def flip(key: jax.Array, x: jnp.ndarray) -> jnp.ndarray:
    """Horizontal flip with p = 0.5."""
    return jnp.where(jax.random.uniform(key) < 0.5, x[:, ::-1], x)

def crop_flip_view(key: jax.Array, canvas: jnp.ndarray, valid: jnp.ndarray, out: int,
                   area_min: float) -> jnp.ndarray:
    """One view of one example: float [0, 255] (out, out, 3)."""
    k_window, k_flip = jax.random.split(key)
    begin, size = sample_window(k_window, valid[0], valid[1], area_min)
    return flip(k_flip, crop_resize(canvas.astype(jnp.float32), begin, size, out))

def crop_flip_batch(key: jax.Array, canvases: jnp.ndarray, valid: jnp.ndarray, out: int,
                    area_min: float) -> jnp.ndarray:
    """uint8 canvases (B, C, C, 3) with valid sizes (B, 2) -> views (B, out, out, 3) as uint8
    values in float32; example i uses fold_in(key, i)."""
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(canvases.shape[0]))
    return jax.vmap(lambda k, c, v: crop_flip_view(k, c, v, out, area_min))(
        keys, canvases, valid)

def crop_views(key: jax.Array, batch: dict[str, jax.Array], image_size: int,
               area_min: float) -> dict[str, jnp.ndarray]:
    """{'view1', 'view2'} from the host's {'image' canvases, 'image_valid' sizes}; view v of
    example i uses fold_in(fold_in(key, v), i)."""
    return {f"view{v}": crop_flip_batch(jax.random.fold_in(key, v), batch["image"],
                                        batch["image_valid"], image_size, area_min)
            for v in (1, 2)}


def random_resized_crop(key: jax.Array, x: jnp.ndarray, area_min: float) -> jnp.ndarray:
    """The ablation op 'crop': the paper's crop of a [0, 1] float image (H, W, 3), resized back
    to (H, W); the same window sampler and bicubic resize as the pipeline's crop, on the device
    (values rounded to 1/255 steps, as the pipeline's uint8 views are)."""
    height, width = x.shape[0], x.shape[1]
    if height != width:
        raise ValueError(f"the 'crop' op needs square images, got {height} x {width}")
    begin, size = sample_window(key, jnp.int32(height), jnp.int32(width), area_min)
    return crop_resize(x * 255.0, begin, size, height) / 255.0
