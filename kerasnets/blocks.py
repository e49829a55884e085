"""Building blocks shared by the model families: functions x -> tensor, every layer named."""
import math

import tf_keras as keras

from kerasnets import layers as knl

L = keras.layers
BN_EPSILON = 1e-5  # PyTorch's default, used by the official code of most families here
BN_MOMENTUM = 0.9


def make_divisible(value, divisor=8, min_value=None):
    """Round channels to a multiple of `divisor`, never more than 10% below `value` (TF slim)."""
    min_value = min_value or divisor
    new = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return new


def activation(x, kind, *, name):
    """Apply a named activation as a layer QAT and TFLite Micro both handle (None: identity)."""
    if kind is None:
        return x
    if kind == "relu":
        return L.ReLU(name=name)(x)
    if kind == "relu6":
        return L.ReLU(6.0, name=name)(x)
    if kind == "hard_swish":
        return knl.HardSwish(name=name)(x)
    if kind == "hard_sigmoid":
        return knl.HardSigmoid(name=name)(x)
    if kind == "sigmoid":
        return L.Activation("sigmoid", name=name)(x)
    raise ValueError(f"unknown activation {kind!r}; use relu, relu6, hard_swish, hard_sigmoid, sigmoid or None")


def batch_norm(x, *, name):
    return L.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=name)(x)


def conv_bn(x, filters, kernel, *, strides=1, groups=1, act="relu", name, padding="same"):
    """Conv2D (no bias) + BatchNorm + activation, the unit of nearly every family here."""
    x = L.Conv2D(filters, kernel, strides=strides, padding=padding, groups=groups,
                 use_bias=False, name=f"{name}_conv")(x)
    x = batch_norm(x, name=f"{name}_bn")
    return activation(x, act, name=f"{name}_{act}") if act else x


def dw_bn(x, kernel, *, strides=1, depth_multiplier=1, act=None, name, padding="same"):
    """DepthwiseConv2D (no bias) + BatchNorm + optional activation."""
    x = L.DepthwiseConv2D(kernel, strides=strides, padding=padding, depth_multiplier=depth_multiplier,
                          use_bias=False, name=f"{name}_dw")(x)
    x = batch_norm(x, name=f"{name}_dwbn")
    return activation(x, act, name=f"{name}_{act}") if act else x


def squeeze_excite(x, reduced, *, gate="hard_sigmoid", name):
    """Squeeze-and-excite: global pool, 1x1 reduce + ReLU, 1x1 expand + gate, channel-wise scale."""
    channels = x.shape[-1]
    s = L.GlobalAveragePooling2D(keepdims=True, name=f"{name}_pool")(x)
    s = L.Conv2D(reduced, 1, use_bias=True, name=f"{name}_reduce")(s)
    s = L.ReLU(name=f"{name}_relu")(s)
    s = L.Conv2D(channels, 1, use_bias=True, name=f"{name}_expand")(s)
    s = activation(s, gate, name=f"{name}_gate")
    return L.Multiply(name=f"{name}_scale")([x, s])


def channel_shuffle(x, groups, *, name):
    """ShuffleNet channel shuffle through tensors of rank <= 4 (N, H*W, G, C/G -> N, H*W, C/G, G).

    The textbook (N, H, W, G, C/G) form makes a 5-D TRANSPOSE that CMSIS-NN rejects silently.
    """
    h, w, c = x.shape[1:]
    if c % groups:
        raise ValueError(f"channel_shuffle: {c} channels do not split into groups={groups} ({name})")
    x = L.Reshape((h * w, groups, c // groups), name=f"{name}_split")(x)
    x = L.Permute((1, 3, 2), name=f"{name}_transpose")(x)
    return L.Reshape((h, w, c), name=f"{name}_merge")(x)


def channel_slice(x, start, size, *, name):
    return knl.ChannelSlice(start, size, name=name)(x)


def ghost_module(x, filters, *, ratio=2, kernel=1, dw_kernel=3, strides=1, act="relu", name):
    """Ghost module (arXiv 1911.11907): ceil(filters/ratio) intrinsic maps from a conv, the
    rest from a cheap depthwise conv on them; concatenated and cut to `filters`."""
    intrinsic = math.ceil(filters / ratio)
    primary = conv_bn(x, intrinsic, kernel, strides=strides, act=act, name=f"{name}_primary")
    cheap = dw_bn(primary, dw_kernel, depth_multiplier=ratio - 1, act=act, name=f"{name}_cheap")
    out = L.Concatenate(name=f"{name}_concat")([primary, cheap])
    if out.shape[-1] != filters:
        out = channel_slice(out, 0, filters, name=f"{name}_slice")
    return out


def classifier_head(x, *, include_top, pooling, classes, classifier_activation, dropout=0.0,
                    name="head"):
    """keras-applications head: pool + dropout + Dense when include_top, else optional pooling."""
    if include_top:
        x = L.GlobalAveragePooling2D(name=f"{name}_pool")(x)
        if dropout:
            x = L.Dropout(dropout, name=f"{name}_dropout")(x)
        return L.Dense(classes, activation=classifier_activation, name=f"{name}_fc")(x)
    if pooling == "avg":
        return L.GlobalAveragePooling2D(name=f"{name}_pool")(x)
    if pooling == "max":
        return L.GlobalMaxPooling2D(name=f"{name}_pool")(x)
    return x


def model_input(input_shape, name="input"):
    return L.Input(shape=input_shape, name=name)
