"""Host-side (tf.data) image ops: decoding, the SimCLR crop and flip, eval crops, and the full
colour augmentation for `augment_on='host'`.

An image reaches these ops either decoded (uint8 HxWx3, in-memory datasets) or encoded (a JPEG,
PNG, GIF, BMP or WebP string, from files or TFRecords). Encoded JPEGs are never decoded whole
for a crop: the window is sampled from the header's shape and only that window is decoded
(`tf.image.decode_and_crop_jpeg`). Every random choice takes a stateless seed (DESIGN §5).
The colour ops mirror simclr_jax/augment.py (the device version) op for op, so both placements
draw from the same distribution.
"""

from collections.abc import Callable

import tensorflow as tf

CROP_ASPECT_RANGE = (3 / 4, 4 / 3)
# sample_distorted_bounding_box rejects crops covering < 10% of the image (official code's value).
CROP_MIN_OBJECT_COVERED = 0.1
CROP_MAX_ATTEMPTS = 100
EVAL_CROP_FRACTION = 0.875
EVAL_NO_CROP_MAX_SIZE = 32  # at <= 32 px (CIFAR) eval uses the whole image
GREY_WEIGHTS = (0.2989, 0.5870, 0.1140)  # tf.image.rgb_to_grayscale's, as in augment.py

Window = tuple[tf.Tensor, tf.Tensor]  # (begin (2,), size (2,)) int32, in (row, column)


def fold(seed: tf.Tensor, data: int | tf.Tensor) -> tf.Tensor:
    """A new stateless seed pair derived from `seed` and `data`."""
    return tf.random.experimental.stateless_fold_in(seed, data)


def decode(encoded: tf.Tensor) -> tf.Tensor:
    """Any supported format -> uint8 HxWx3 (grey, palette, RGBA, CMYK and 16-bit become RGB)."""
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def as_rgb(image: tf.Tensor) -> tf.Tensor:
    """A decoded uint8 image with 1, 3 or 4 channels -> 3 channels (alpha dropped)."""
    channels = image.shape[-1]
    if channels == 1:
        return tf.image.grayscale_to_rgb(image)
    return image[..., :3] if channels == 4 else image


def decode_window(image: tf.Tensor, window_fn: Callable[[tf.Tensor], Window]) -> tf.Tensor:
    """The window `window_fn(shape (h, w))` of an encoded or decoded image, as uint8 RGB.

    For JPEG strings only the window is decoded (fused decode-and-crop).
    """
    image = tf.convert_to_tensor(image)
    def crop(decoded: tf.Tensor) -> tf.Tensor:
        begin, size = window_fn(tf.shape(decoded)[:2])
        return tf.slice(decoded, tf.concat([begin, [0]], 0), tf.concat([size, [3]], 0))

    if image.dtype != tf.string:
        return crop(as_rgb(image))

    def fused() -> tf.Tensor:
        begin, size = window_fn(tf.io.extract_jpeg_shape(image)[:2])
        return tf.image.decode_and_crop_jpeg(image, tf.concat([begin, size], 0), channels=3)

    out = tf.cond(tf.io.is_jpeg(image), fused, lambda: crop(decode(image)))
    out.set_shape([None, None, 3])
    return out


def random_window(shape: tf.Tensor, seed: tf.Tensor, area_min: float) -> Window:
    """Inception-style crop window: area in (area_min, 1), aspect 3/4..4/3 (whole image if no
    valid sample in 100 attempts)."""
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.concat([shape, [3]], 0), bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
        seed=seed, min_object_covered=CROP_MIN_OBJECT_COVERED,
        aspect_ratio_range=CROP_ASPECT_RANGE, area_range=(area_min, 1.0),
        max_attempts=CROP_MAX_ATTEMPTS, use_image_if_no_bounding_boxes=True)
    return begin[:2], size[:2]


def center_window(shape: tf.Tensor, fraction: float = EVAL_CROP_FRACTION) -> Window:
    """Central square covering `fraction` of the shorter side (official SimCLR centre crop)."""
    side = tf.cast(tf.math.rint(fraction * tf.cast(tf.reduce_min(shape), tf.float32)), tf.int32)
    side = tf.maximum(side, 1)
    return (shape - side + 1) // 2, tf.stack([side, side])


def resize(image: tf.Tensor, size: int | tuple[int, int], method: str = "bicubic",
           antialias: bool = False) -> tf.Tensor:
    """uint8 -> uint8 resize (rounded and clipped: bicubic overshoots)."""
    size = (size, size) if isinstance(size, int) else size
    out = tf.image.resize(tf.cast(image, tf.float32), size, method=method, antialias=antialias)
    return tf.cast(tf.clip_by_value(tf.round(out), 0.0, 255.0), tf.uint8)


def crop_and_flip(image: tf.Tensor, seed: tf.Tensor, size: int, area_min: float) -> tf.Tensor:
    """One view's geometry: random resized crop (bicubic) to size x size, then a random flip.

    The crop and flip seeds are those of the original pipeline (fold 0 and 1 of `seed`).
    """
    window = decode_window(image, lambda s: random_window(s, fold(seed, 0), area_min))
    view = resize(window, size)
    return tf.image.stateless_random_flip_left_right(view, fold(seed, 1))


def center_crop_resize(image: tf.Tensor, size: int,
                       fraction: float = EVAL_CROP_FRACTION) -> tf.Tensor:
    """Eval preprocessing: centre crop `fraction` then bicubic resize to size x size.

    At size <= 32 the whole image is used (the paper's CIFAR protocol): only resized if needed.
    """
    image = tf.convert_to_tensor(image)
    if size <= EVAL_NO_CROP_MAX_SIZE:
        whole = decode(image) if image.dtype == tf.string else as_rgb(image)
        same = tf.reduce_all(tf.shape(whole)[:2] == size)
        out = tf.cond(same, lambda: whole, lambda: resize(whole, size))
    else:
        out = resize(decode_window(image, lambda s: center_window(s, fraction)), size)
    out.set_shape([size, size, 3])
    return out


def square(image: tf.Tensor, side: int = 256) -> tf.Tensor:
    """A decoded image of any size as side x side uint8 RGB: the shorter side resized to `side`
    (bicubic, antialiased, aspect kept), then the centred square. How the evaluation jobs hold
    variable-size splits in memory; their 0.875 centre crop then gives resize-256 / crop-224."""
    image = as_rgb(tf.convert_to_tensor(image))
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    target = tf.maximum(side, tf.cast(tf.math.round(shape * side / tf.reduce_min(shape)),
                                      tf.int32))
    resized = resize(image, target, antialias=True)
    top, left = (target[0] - side) // 2, (target[1] - side) // 2
    out = resized[top:top + side, left:left + side]
    out.set_shape([side, side, 3])
    return out


def to_canvas(image: tf.Tensor, canvas: int) -> tuple[tf.Tensor, tf.Tensor]:
    """For the crop on the device: the image shrunk (aspect kept) to fit canvas x canvas and
    padded at the bottom/right with zeros; returns (canvas uint8, valid (h, w) int32).

    Large JPEGs are decoded at 1/2, 1/4 or 1/8 scale by the decoder itself (DCT scaling),
    which is most of what makes this mode cheap for the host.
    """
    image = tf.convert_to_tensor(image)
    if image.dtype == tf.string:
        def jpeg() -> tf.Tensor:
            longest = tf.reduce_max(tf.io.extract_jpeg_shape(image)[:2])
            # Largest DCT scaling that keeps the longer side >= canvas.
            branch = tf.reduce_sum(tf.cast(longest >= canvas * tf.constant([2, 4, 8]), tf.int32))
            return tf.switch_case(branch, [
                lambda r=r: tf.io.decode_jpeg(image, channels=3, ratio=r) for r in (1, 2, 4, 8)])
        decoded = tf.cond(tf.io.is_jpeg(image), jpeg, lambda: decode(image))
        decoded.set_shape([None, None, 3])
    else:
        decoded = as_rgb(image)
    shape = tf.shape(decoded)[:2]
    scale = tf.minimum(1.0, canvas / tf.cast(tf.reduce_max(shape), tf.float32))
    target = tf.maximum(1, tf.cast(tf.math.rint(tf.cast(shape, tf.float32) * scale), tf.int32))
    shrunk = tf.cond(scale < 1.0, lambda: resize(decoded, target, antialias=True),
                     lambda: decoded)
    padded = tf.image.pad_to_bounding_box(shrunk, 0, 0, canvas, canvas)
    return padded, target


# ---- Colour, greyscale and blur: the host twin of simclr_jax/augment.py ----

def color_jitter(x: tf.Tensor, seed: tf.Tensor, strength: float) -> tf.Tensor:
    """Brightness, contrast, saturation (0.8 s) and hue (0.2 s) in a random order, clipped to
    [0, 1] after each op; x is float32 HxWx3 in [0, 1]."""
    b = c = s = 0.8 * strength
    h = 0.2 * strength

    def uniform(i: int, low: float, high: float) -> tf.Tensor:
        return tf.random.stateless_uniform([], fold(seed, i), minval=low, maxval=high)

    brightness = uniform(1, max(0.0, 1 - b), 1 + b)
    contrast = uniform(2, max(0.0, 1 - c), 1 + c)
    saturation = uniform(3, max(0.0, 1 - s), 1 + s)
    hue = uniform(4, -h, h)
    order = tf.argsort(tf.random.stateless_uniform([4], fold(seed, 0)))
    for slot in range(4):
        x = tf.switch_case(order[slot], [
            lambda x=x: x * brightness,  # multiplicative, as SimCLRv2 (and augment.py)
            lambda x=x: tf.image.adjust_contrast(x, contrast),
            lambda x=x: tf.image.adjust_saturation(x, saturation),
            lambda x=x: tf.image.adjust_hue(x, hue),
        ])
        x = tf.clip_by_value(x, 0.0, 1.0)
    return x


def gaussian_blur(x: tf.Tensor, seed: tf.Tensor, sigma_range=(0.1, 2.0)) -> tf.Tensor:
    """Separable Gaussian blur, kernel 10% of the side, sigma ~ U(sigma_range), zero padding."""
    radius = int(x.shape[0]) // 10 // 2
    if radius == 0:
        return x
    sigma = tf.random.stateless_uniform([], seed, minval=sigma_range[0], maxval=sigma_range[1])
    taps = tf.range(-radius, radius + 1, dtype=tf.float32)
    w = tf.exp(-(taps**2) / (2.0 * sigma**2))
    w = w / tf.reduce_sum(w)
    x = x[None]
    for kernel in (tf.reshape(w, [-1, 1, 1, 1]), tf.reshape(w, [1, -1, 1, 1])):
        x = tf.nn.depthwise_conv2d(x, tf.tile(kernel, [1, 1, 3, 1]), [1, 1, 1, 1], "SAME")
    return x[0]


def color_augment(view: tf.Tensor, seed: tf.Tensor, strength: float, jitter_prob: float,
                  grey_prob: float, blur_prob: float) -> tf.Tensor:
    """What augment.augment_view does on the device, on the host: uint8 view in, uint8 out
    (rounding to uint8 keeps the host->device traffic at one byte per channel)."""
    x = tf.cast(view, tf.float32) / 255.0

    def draw(i: int) -> tf.Tensor:
        return tf.random.stateless_uniform([], fold(seed, i))

    x = tf.cond(draw(0) < jitter_prob, lambda: color_jitter(x, fold(seed, 1), strength),
                lambda: x)
    grey = tf.reduce_sum(x * tf.constant(GREY_WEIGHTS), axis=-1, keepdims=True)
    x = tf.cond(draw(2) < grey_prob, lambda: tf.broadcast_to(grey, tf.shape(x)), lambda: x)
    if blur_prob > 0:
        x = tf.cond(draw(3) < blur_prob, lambda: gaussian_blur(x, fold(seed, 4)), lambda: x)
    x = tf.clip_by_value(x, 0.0, 1.0)
    return tf.cast(tf.round(x * 255.0), tf.uint8)
