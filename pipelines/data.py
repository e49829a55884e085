"""Data sources. For now: the embedded default, scikit-learn's bundled handwritten digits."""
from __future__ import annotations

import numpy as np


def digits_images(input_shape, count: int, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`count` real handwritten digits (scikit-learn's bundled 8x8 set, no download) resized to
    `input_shape` (H, W, C), scaled to [-1, 1], with their labels 0-9."""
    import tensorflow as tf
    from sklearn.datasets import load_digits

    height, width, channels = (int(d) for d in input_shape)
    digits = load_digits()
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(digits.images), size=count, replace=count > len(digits.images))
    images = digits.images[pick].astype("float32")[..., None] / 16.0  # pixel values are 0..16
    images = tf.image.resize(images, (height, width), method="bilinear").numpy()
    images = np.repeat(images, channels, axis=-1) * 2.0 - 1.0
    return images.astype("float32"), digits.target[pick].astype("int64")
