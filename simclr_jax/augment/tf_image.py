"""Host-side (tf.data) image primitives: decoding, windows, resizing, eval crops and canvases.

An image reaches these ops either decoded (uint8 HxWx3, in-memory datasets) or encoded (a JPEG,
PNG, GIF, BMP or WebP string, from files or TFRecords). Encoded JPEGs are never decoded whole
for a crop: only the window is decoded (`tf.image.decode_and_crop_jpeg`). Random ops take
stateless seeds (`fold`), so every draw is a pure function of (seed, example position).
"""

from collections.abc import Callable

import tensorflow as tf

EVAL_CROP_FRACTION = 0.875  # official centre crop: 87.5% of the shorter side
EVAL_NO_CROP_MAX_SIZE = 32  # at <= 32 px (CIFAR) eval uses the whole image
JPEG_MARGIN = 16  # columns decoded beyond each side of a window: one MCU (see decode_window)

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

    For JPEG strings only the window is decoded (fused decode-and-crop), with exactly the
    pixels a full decode would give.
    """
    image = tf.convert_to_tensor(image)
    def crop(decoded: tf.Tensor) -> tf.Tensor:
        begin, size = window_fn(tf.shape(decoded)[:2])
        return tf.slice(decoded, tf.concat([begin, [0]], 0), tf.concat([size, [3]], 0))

    if image.dtype != tf.string:
        return crop(as_rgb(image))

    def fused() -> tf.Tensor:
        shape = tf.io.extract_jpeg_shape(image)[:2]
        begin, size = window_fn(shape)
        # libjpeg treats the left and right edges of a cropped decode as image edges, so the
        # chroma upsampling of the window's first / last column would miss its neighbour
        # (measured: up to 21 levels off in that column). Decoding one MCU (16 px) more on
        # each side and slicing gives exactly the pixels of the full decode.
        left = tf.maximum(begin[1] - JPEG_MARGIN, 0)
        right = tf.minimum(begin[1] + size[1] + JPEG_MARGIN, shape[1])
        wide = tf.image.decode_and_crop_jpeg(
            image, tf.stack([begin[0], left, size[0], right - left]), channels=3)
        return wide[:, begin[1] - left:begin[1] - left + size[1]]

    out = tf.cond(tf.io.is_jpeg(image), fused, lambda: crop(decode(image)))
    out.set_shape([None, None, 3])
    return out

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
