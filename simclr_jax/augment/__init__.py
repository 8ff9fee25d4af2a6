"""SimCLR's augmentation: the op registry (ops.py: each op once, in jnp), the paper's recipe and
the ablations' op lists as specs over it (recipes.py), both views of a training batch on the
device or the host CPU (views.py), and the ops themselves: random resized crop + flip (crop.py;
its host placement is TF's, fused with the JPEG decode), colour jitter and greyscale (color.py),
blur (blur.py), and the host image primitives (tf_image.py)."""
