"""SimCLR's augmentation: the random resized crop + flip on the host or the device (crop.py),
colour jitter and greyscale (color.py), blur (blur.py), their TF twins for augment_on='host'
(host.py), both views of a training batch (views.py), the ablation ops registry (ops.py), and
the host image primitives (tf_image.py)."""
