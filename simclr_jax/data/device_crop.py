"""Random resized crop + flip on the accelerator (`crop_on='device'`), in jnp.

The host only decodes each image once into a fixed canvas (host_augment.to_canvas: shrunk to
fit, padded, with its valid (h, w)); both views are cropped here. The window sampler is a
port of TF's sample_distorted_bounding_box (the host crop), including its quirks, and the
crop+resize is TF's bicubic resize (Keys cubic a=-0.5, half-pixel centres, no antialiasing)
restricted to the window, written as two small dense matmuls per view. So for the same window
the device crop equals the host crop up to float rounding, and the window distribution is the
host's. Every example draws from fold_in(key, index in the global batch) (DESIGN §5).
"""

import jax
import jax.numpy as jnp

from simclr_jax.data.host_augment import (
    CROP_ASPECT_RANGE,
    CROP_MAX_ATTEMPTS,
    CROP_MIN_OBJECT_COVERED,
)


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


def crop_flip_view(key: jax.Array, canvas: jnp.ndarray, valid: jnp.ndarray, out: int,
                   area_min: float) -> jnp.ndarray:
    """One view of one example: float [0, 255] (out, out, 3)."""
    k_window, k_flip = jax.random.split(key)
    begin, size = sample_window(k_window, valid[0], valid[1], area_min)
    view = crop_resize(canvas.astype(jnp.float32), begin, size, out)
    return jnp.where(jax.random.bernoulli(k_flip), view[:, ::-1], view)


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
