"""Data augmentation: plain TensorFlow functions image -> image, usable inside `tf.data` maps.

For now: the self-querying augmentation of CondenseNeXtV2 (Kalgaonkar and El-Sharkawy, J. Low
Power Electron. Appl. 2022): every image queries a learned augmentation policy for one of its
sub-policies at random and applies that sub-policy's two operations, each with its own
probability and magnitude. The default policy is the one AutoAugment learned on CIFAR-10
(Cubuk et al., arXiv 1805.09501, Appendix), with its operations and 10 magnitude bins.

Images are (H, W, C) or batches (N, H, W, C) of uint8 or float pixels in [0, 255]; the result has
the input's shape and dtype. Each operation works on 8-bit values as the PIL originals do, so the
photometric ones (equalize, posterize, solarize, autocontrast) give PIL's results exactly.
"""
from __future__ import annotations

import math

import tensorflow as tf

BINS = 10  # magnitude bins 0..9 of the AutoAugment search space

# (operation, probability, magnitude bin or None) pairs: the 25 sub-policies AutoAugment found on
# CIFAR-10, as listed in its paper's appendix.
CIFAR10_POLICY = (
    (("Invert", 0.1, None), ("Contrast", 0.2, 6)),
    (("Rotate", 0.7, 2), ("TranslateX", 0.3, 9)),
    (("Sharpness", 0.8, 1), ("Sharpness", 0.9, 3)),
    (("ShearY", 0.5, 8), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.5, None), ("Equalize", 0.9, None)),
    (("ShearY", 0.2, 7), ("Posterize", 0.3, 7)),
    (("Color", 0.4, 3), ("Brightness", 0.6, 7)),
    (("Sharpness", 0.3, 9), ("Brightness", 0.7, 9)),
    (("Equalize", 0.6, None), ("Equalize", 0.5, None)),
    (("Contrast", 0.6, 7), ("Sharpness", 0.6, 5)),
    (("Color", 0.7, 7), ("TranslateX", 0.5, 8)),
    (("Equalize", 0.3, None), ("AutoContrast", 0.4, None)),
    (("TranslateY", 0.4, 3), ("Sharpness", 0.2, 6)),
    (("Brightness", 0.9, 6), ("Color", 0.2, 8)),
    (("Solarize", 0.5, 2), ("Invert", 0.0, None)),
    (("Equalize", 0.2, None), ("AutoContrast", 0.6, None)),
    (("Equalize", 0.2, None), ("Equalize", 0.6, None)),
    (("Color", 0.9, 9), ("Equalize", 0.6, None)),
    (("AutoContrast", 0.8, None), ("Solarize", 0.2, 8)),
    (("Brightness", 0.1, 3), ("Color", 0.7, 0)),
    (("Solarize", 0.4, 5), ("AutoContrast", 0.9, None)),
    (("TranslateY", 0.9, 9), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.9, None), ("Solarize", 0.8, 3)),
    (("Equalize", 0.8, None), ("Invert", 0.1, None)),
    (("TranslateY", 0.7, 9), ("AutoContrast", 0.9, None)),
)


def _linear_bins(top, bottom=0.0):
    return [bottom + (top - bottom) * i / (BINS - 1) for i in range(BINS)]


# operation -> (magnitude per bin or None, whether a random sign applies)
MAGNITUDES = {
    "ShearX": (_linear_bins(0.3), True),  # shear factor
    "ShearY": (_linear_bins(0.3), True),
    "TranslateX": (_linear_bins(150 / 331), True),  # fraction of the image width
    "TranslateY": (_linear_bins(150 / 331), True),
    "Rotate": (_linear_bins(30.0), True),  # degrees
    "Brightness": (_linear_bins(0.9), True),  # enhancement factor 1 +- m
    "Color": (_linear_bins(0.9), True),
    "Contrast": (_linear_bins(0.9), True),
    "Sharpness": (_linear_bins(0.9), True),
    "Posterize": ([8, 8, 7, 7, 6, 6, 5, 5, 4, 4], False),  # bits kept
    "Solarize": (_linear_bins(0.0, 256.0), False),  # threshold: pixels >= it are inverted
    "AutoContrast": (None, False),
    "Equalize": (None, False),
    "Invert": (None, False),
}


# --- operations on one float32 (H, W, C) image holding 8-bit values --------------------------

def _blend(degenerate, image, factor):
    """PIL ImageEnhance: degenerate + factor * (image - degenerate), as 8-bit values."""
    return tf.clip_by_value(tf.round(degenerate + factor * (image - degenerate)), 0.0, 255.0)


def _grayscale(image):
    """PIL's L conversion (ITU-R 601-2 luma in 16-bit fixed point) for RGB; the image itself if
    single-channel. Exact in float32: the largest sum stays below 2**24."""
    if image.shape[-1] == 1:
        return image
    weighted = tf.tensordot(image, tf.constant([19595.0, 38470.0, 7471.0]), axes=[[2], [0]])
    return tf.floor((weighted + 32768.0) / 65536.0)[..., None]


def _brightness(image, factor):
    return _blend(tf.zeros_like(image), image, factor)


def _color(image, factor):
    return _blend(tf.broadcast_to(_grayscale(image), tf.shape(image)), image, factor)


def _contrast(image, factor):
    mean = tf.round(tf.reduce_mean(_grayscale(image)))  # PIL: mean of the grey histogram
    return _blend(tf.fill(tf.shape(image), mean), image, factor)


def _sharpness(image, factor):
    """Blend with PIL's SMOOTH-filtered image (3x3, centre 5, total 13); the border stays sharp."""
    kernel = tf.constant([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]]) / 13.0
    channels = image.shape[-1]
    kernel = tf.tile(kernel[:, :, None, None], [1, 1, channels, 1])
    smooth = tf.round(tf.nn.depthwise_conv2d(image[None], kernel, [1, 1, 1, 1], "VALID")[0])
    degenerate = tf.pad(smooth, [[1, 1], [1, 1], [0, 0]])
    interior = tf.pad(tf.ones_like(smooth), [[1, 1], [1, 1], [0, 0]])
    degenerate = interior * degenerate + (1.0 - interior) * image
    return _blend(degenerate, image, factor)


def _posterize(image, bits):
    step = tf.pow(2.0, 8.0 - tf.cast(bits, tf.float32))
    return tf.floor(image / step) * step


def _solarize(image, threshold):
    return tf.where(image >= threshold, 255.0 - image, image)


def _invert(image):
    return 255.0 - image


def _autocontrast(image):
    """Stretch each channel to 0..255 (PIL ImageOps.autocontrast without cutoff, whose lookup
    table truncates x * scale + offset computed in double precision)."""
    pixels = tf.cast(image, tf.float64)
    low = tf.reduce_min(pixels, axis=[0, 1], keepdims=True)
    high = tf.reduce_max(pixels, axis=[0, 1], keepdims=True)
    scale = 255.0 / tf.maximum(high - low, 1.0)
    stretched = tf.clip_by_value(tf.floor(pixels * scale - low * scale), 0.0, 255.0)
    return tf.cast(tf.where(high > low, stretched, pixels), image.dtype)


def _equalize_channel(channel):
    """PIL ImageOps.equalize on one channel of 8-bit values."""
    values = tf.cast(channel, tf.int32)
    histogram = tf.math.bincount(tf.reshape(values, [-1]), minlength=256, maxlength=256)
    last = tf.gather(histogram, tf.reduce_max(tf.where(histogram > 0)))
    step = (tf.reduce_sum(histogram) - last) // 255
    safe_step = tf.maximum(step, 1)
    before = tf.cumsum(histogram, exclusive=True)
    lut = tf.minimum((before + safe_step // 2) // safe_step, 255)
    equalized = tf.cast(tf.gather(lut, values), channel.dtype)
    return tf.where(step > 0, equalized, channel)


def _equalize(image):
    return tf.stack([_equalize_channel(image[..., c]) for c in range(image.shape[-1])], axis=-1)


def _warp(image, transform, fill):
    """Nearest-neighbour warp; `transform` (a0 a1 a2 b0 b1 b2) maps output (x, y) to the input
    point (a0 x + a1 y + a2, b0 x + b1 y + b2), as PIL's Image.transform."""
    transform = tf.concat([tf.cast(tf.stack(transform), tf.float32), tf.zeros([2])], axis=0)
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None], transforms=transform[None], output_shape=tf.stack([height, width]),
        fill_value=float(fill), interpolation="NEAREST", fill_mode="CONSTANT")[0]


def _rotation(image, degrees):
    """Inverse map of a rotation by `degrees` about the image centre."""
    angle = tf.cast(degrees, tf.float32) * (math.pi / 180.0)
    cos, sin = tf.cos(angle), tf.sin(angle)
    centre_x = (tf.cast(tf.shape(image)[1], tf.float32) - 1.0) / 2.0
    centre_y = (tf.cast(tf.shape(image)[0], tf.float32) - 1.0) / 2.0
    return [cos, sin, centre_x - cos * centre_x - sin * centre_y,
            -sin, cos, centre_y + sin * centre_x - cos * centre_y]


def _geometric(image, name, magnitude, fill):
    width = tf.cast(tf.shape(image)[1], tf.float32)
    height = tf.cast(tf.shape(image)[0], tf.float32)
    transforms = {
        "ShearX": lambda: [1.0, magnitude, 0.0, 0.0, 1.0, 0.0],  # magnitude may be a tensor
        "ShearY": lambda: [1.0, 0.0, 0.0, magnitude, 1.0, 0.0],
        "TranslateX": lambda: [1.0, 0.0, tf.round(magnitude * width), 0.0, 1.0, 0.0],
        "TranslateY": lambda: [1.0, 0.0, 0.0, 0.0, 1.0, tf.round(magnitude * height)],
        "Rotate": lambda: _rotation(image, magnitude),
    }
    return _warp(image, transforms[name](), fill)


_PHOTOMETRIC = {
    "Brightness": lambda image, m: _brightness(image, 1.0 + m),
    "Color": lambda image, m: _color(image, 1.0 + m),
    "Contrast": lambda image, m: _contrast(image, 1.0 + m),
    "Sharpness": lambda image, m: _sharpness(image, 1.0 + m),
    "Posterize": _posterize,
    "Solarize": _solarize,
    "AutoContrast": lambda image, m: _autocontrast(image),
    "Equalize": lambda image, m: _equalize(image),
    "Invert": lambda image, m: _invert(image),
}


def _operation(image, name, magnitude, fill):
    """Operation `name` at a signed magnitude value (a float or a scalar tensor)."""
    if name in _PHOTOMETRIC:
        return _PHOTOMETRIC[name](image, magnitude)
    return _geometric(image, name, magnitude, fill)


def apply_operation(image, name: str, magnitude_bin=None, *, negate=False, fill=128):
    """One policy operation at a magnitude bin (0..9) on a float32 (H, W, C) 8-bit image;
    `negate` flips the sign of signed magnitudes (shear, translate, rotate, enhancements)."""
    _check_operation(name, magnitude_bin)
    bins, signed = MAGNITUDES[name]
    magnitude = 0.0 if bins is None else bins[int(magnitude_bin)]
    return _operation(image, name, -magnitude if signed and negate else magnitude, fill)


def _check_operation(name, magnitude_bin):
    if name not in MAGNITUDES:
        raise ValueError(f"unknown augmentation operation {name!r}; use one of {', '.join(MAGNITUDES)}")
    if MAGNITUDES[name][0] is not None and (magnitude_bin is None or not 0 <= int(magnitude_bin) < BINS):
        raise ValueError(f"operation {name} needs a magnitude bin 0..{BINS - 1}, got {magnitude_bin!r}")


def check_policy(policy) -> None:
    """Raise ValueError unless `policy` is a non-empty sequence of sub-policies of
    (operation, probability in [0, 1], magnitude bin) triples."""
    if not policy:
        raise ValueError("an augmentation policy needs at least one sub-policy")
    for sub_policy in policy:
        for name, probability, magnitude_bin in sub_policy:
            _check_operation(name, magnitude_bin)
            if not 0.0 <= probability <= 1.0:
                raise ValueError(f"probability of {name} must be in [0, 1], got {probability!r}")


OPERATIONS = tuple(MAGNITUDES)  # index -> operation name in the policy tables


def policy_tables(policy):
    """The policy as constant tables (sub-policies x steps): operation index, probability, signed
    magnitude value and whether it is signed. Shorter sub-policies are padded with never-applied
    steps, so one lookup serves every sub-policy."""
    steps = max(len(sub_policy) for sub_policy in policy)
    rows = []
    for sub_policy in policy:
        padded = list(sub_policy) + [("Invert", 0.0, None)] * (steps - len(sub_policy))
        rows.append([(OPERATIONS.index(name), probability,
                      0.0 if MAGNITUDES[name][0] is None else MAGNITUDES[name][0][int(magnitude_bin)],
                      MAGNITUDES[name][1])
                     for name, probability, magnitude_bin in padded])
    columns = list(zip(*[step for row in rows for step in row]))
    shape = (len(rows), steps)
    return (tf.reshape(tf.constant(columns[0], tf.int32), shape),
            tf.reshape(tf.constant(columns[1], tf.float32), shape),
            tf.reshape(tf.constant(columns[2], tf.float32), shape),
            tf.reshape(tf.constant(columns[3], tf.bool), shape))


def _apply_step(image, operation, probability, magnitude, signed, fill):
    """One step of the drawn sub-policy: with its probability, its operation at its magnitude
    with a random sign (one switch over the operation types, not one graph per policy entry)."""
    negate = tf.logical_and(signed, tf.random.uniform([]) < 0.5)
    magnitude = tf.where(negate, -magnitude, magnitude)
    branches = [lambda name=name: _operation(image, name, magnitude, fill) for name in OPERATIONS]
    return tf.cond(tf.random.uniform([]) < probability,
                   lambda: tf.ensure_shape(tf.switch_case(operation, branches), image.shape),
                   lambda: image)


def _augment_one(image, tables, fill):
    operations, probabilities, magnitudes, signed = tables
    query = tf.random.uniform([], 0, tf.shape(operations)[0], dtype=tf.int32)  # the drawn sub-policy
    out = tf.round(tf.cast(image, tf.float32))
    for step in range(operations.shape[1]):
        out = _apply_step(out, operations[query, step], probabilities[query, step],
                          magnitudes[query, step], signed[query, step], fill)
    return tf.cast(out, image.dtype) if image.dtype != tf.float32 else out


def self_querying_augment(images, policy=CIFAR10_POLICY, *, fill=128):
    """CondenseNeXtV2's self-querying augmentation of an image (H, W, C) or a batch (N, H, W, C)
    with pixel values in [0, 255] (uint8 or float): each image draws one sub-policy of `policy`
    and applies its operations, each with its probability, at its magnitude and a random sign.
    Geometric operations fill uncovered pixels with `fill`.

        dataset = dataset.map(self_querying_augment, num_parallel_calls=tf.data.AUTOTUNE)
    """
    check_policy(policy)
    tables = policy_tables(policy)
    images = tf.convert_to_tensor(images)
    if images.shape.rank == 3:
        return _augment_one(images, tables, fill)
    if images.shape.rank == 4:
        return tf.map_fn(lambda image: _augment_one(image, tables, fill), images,
                         fn_output_signature=images.dtype)
    raise ValueError(f"self_querying_augment needs (H, W, C) or (N, H, W, C) images, got shape {images.shape}")


# ---------------------------------------------------------------------------------------------
# Training-time augmentation for pipelines.train: images in [-1, 1], one-hot labels. The Keras 3
# image layers (RandAugment, AugMix, MixUp, CutMix) run inside tf.data; the models stay tf_keras.


def batch_random_crop(images, labels):
    """Standard CIFAR crop for a batch (N, H, W, C): zero-pad by 1/8 of the side, crop back at a
    random offset per image, in a few vectorised ops (rows and columns gathered from the padded
    batch): a per-image map in tf.data costs a call per image, time a 2-core CPU takes from the
    training step."""
    count, height, width = tf.shape(images)[0], images.shape[1], images.shape[2]
    pad = max(int(height) // 8, 1)
    padded = tf.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
    offsets = tf.random.uniform((2, count), 0, 2 * pad + 1, dtype=tf.int32)
    rows = offsets[0][:, None] + tf.range(height)[None]
    cols = offsets[1][:, None] + tf.range(width)[None]
    cropped = tf.gather(padded, rows, axis=1, batch_dims=1)
    return tf.gather(cropped, cols, axis=2, batch_dims=1), labels


def batch_random_flip(images, labels):
    """Each image of a batch mirrored left-right with probability 1/2."""
    flip = tf.random.uniform((tf.shape(images)[0], 1, 1, 1)) < 0.5
    return tf.where(flip, tf.reverse(images, axis=[2]), images), labels


def _keras3_image_layer(name, seed):
    import keras  # Keras 3: only its preprocessing layers are used, inside tf.data

    if name == "randaugment":
        return keras.layers.RandAugment(value_range=(-1.0, 1.0), seed=seed)
    return keras.layers.AugMix(value_range=(-1.0, 1.0), seed=seed)


def _keras3_mixing_layer(name, seed):
    import keras

    return keras.layers.MixUp(alpha=0.2, seed=seed) if name == "mixup" else keras.layers.CutMix(seed=seed)


def _self_querying(image, label):
    pixels = (image + 1.0) * 127.5
    return self_querying_augment(pixels) / 127.5 - 1.0, label


PER_IMAGE = ("crop", "flip", "randaugment", "augmix", "self_querying")
PER_BATCH = ("mixup", "cutmix")


def split(names, *, seed=0):
    """Map functions for tf.data from augmentation names: (per-image fns, per-batch fns).

    Per-image: randaugment, augmix, self_querying. Per-batch: crop and flip (vectorised over the
    batch, first), then mixup, cutmix (they mix labels). Keras layers are built here, once,
    outside the tf.data functions.
    """
    per_image, geometric, per_batch = [], [], []
    for name in names or ():
        if name == "crop":
            geometric.append(batch_random_crop)
        elif name == "flip":
            geometric.append(batch_random_flip)
        elif name in ("randaugment", "augmix"):
            layer = _keras3_image_layer(name, seed)
            per_image.append(lambda x, y, layer=layer: (tf.clip_by_value(layer(x), -1.0, 1.0), y))
        elif name == "self_querying":
            per_image.append(_self_querying)
        elif name in PER_BATCH:
            layer = _keras3_mixing_layer(name, seed)

            def mix(x, y, layer=layer):
                out = layer({"images": x, "labels": y})
                return out["images"], out["labels"]

            per_batch.append(mix)
        else:
            raise ValueError(f"unknown augmentation {name!r}; known: {', '.join(PER_IMAGE + PER_BATCH)}")
    return per_image, geometric + per_batch
