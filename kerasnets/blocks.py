"""Building blocks shared by the model families: functions x -> tensor, every layer named.

Families share code only through this module and `kerasnets.layers`: a block, table or helper that
two families use lives here, and each family imports it from here."""
from __future__ import annotations

import dataclasses
import math

import tf_keras as keras

from kerasnets import layers as knl
from kerasnets.layers import conv_initializer

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


# ---------------------------------------------------------------------------------------------
# classifier heads


def conv_head(x, *, include_top, pooling, classes, classifier_activation, dropout=0.0,
              hidden=None, hidden_act=None, name="head"):
    """Classifier on the pooled 1x1 map, after keras applications MobileNet/V3: global pool ->
    [1x1 conv `hidden` with bias, no BN -> `hidden_act` (MobileNetV3, GhostNet)] -> dropout ->
    1x1 conv to the classes -> flatten -> classifier activation. Without the top: the feature
    map, or its pooling.

    Every matmul stays a CONV_2D: LiteRT's reference FULLY_CONNECTED requantises in float while
    TFLite Micro's does it in integers, so about 0.1% of their int8 outputs differ by 1 LSB;
    their CONV_2D kernels agree bit for bit."""
    if not include_top:
        return classifier_head(x, include_top=False, pooling=pooling, classes=classes,
                                      classifier_activation=classifier_activation, name=name)
    x = L.GlobalAveragePooling2D(keepdims=True, name=f"{name}_pool")(x)
    if hidden:
        x = L.Conv2D(hidden, 1, use_bias=True, name=f"{name}_conv")(x)
        x = activation(x, hidden_act, name=f"{name}_{hidden_act}")
    if dropout:
        x = L.Dropout(dropout, name=f"{name}_dropout")(x)
    x = L.Conv2D(classes, 1, use_bias=True, name=f"{name}_logits")(x)
    x = L.Flatten(name=f"{name}_flatten")(x)
    return L.Activation(classifier_activation, name=f"{name}_predictions")(x)


def conv_classifier_head(x, *, include_top, pooling, classes, classifier_activation,
                         hidden=None, hidden_act=None, dropout=0.0, name="head"):
    """Pooled classifier with 1x1 convs on the 1x1 pooled map instead of Dense layers: the same
    weights and MACs, but TFLite CONV_2D, whose int8 outputs TFLite Micro reproduces bit for bit
    (its FULLY_CONNECTED differs from LiteRT's reference kernel by 1 LSB on some outputs).
    `hidden` adds MobileNetV3's wide 1x1 layer (with bias, no BN) before the classifier."""
    if not include_top:
        return classifier_head(x, include_top=False, pooling=pooling, classes=classes,
                                      classifier_activation=classifier_activation, name=name)
    x = L.GlobalAveragePooling2D(keepdims=True, name=f"{name}_pool")(x)
    if hidden:
        x = L.Conv2D(hidden, 1, name=f"{name}_expand")(x)
        x = activation(x, hidden_act, name=f"{name}_{hidden_act}")
    if dropout:
        x = L.Dropout(dropout, name=f"{name}_dropout")(x)
    x = L.Conv2D(classes, 1, activation=classifier_activation, name=f"{name}_fc")(x)
    return L.Flatten(name=f"{name}_flatten")(x)


# ---------------------------------------------------------------------------------------------
# plain or Ghost conv units (CIFAR ResNets, VGG)


def conv_unit(ghost_ratio=None, ghost_dw_kernel=3):
    """The conv-BN-act unit `f(x, filters, kernel, *, strides, act, name)` of a plain net, or the
    Ghost module that replaces it as a drop-in (same output channels, kernel and stride)."""
    if ghost_ratio is None:
        return conv_bn
    if isinstance(ghost_ratio, bool) or not isinstance(ghost_ratio, int) or ghost_ratio < 2:
        raise ValueError(f"ratio (Ghost s) must be an int >= 2, got {ghost_ratio!r}")
    if isinstance(ghost_dw_kernel, bool) or not isinstance(ghost_dw_kernel, int) or ghost_dw_kernel < 1:
        raise ValueError(f"dw_kernel (Ghost d) must be an int >= 1, got {ghost_dw_kernel!r}")

    def ghost_unit(x, filters, kernel, *, strides=1, act="relu", name):
        return ghost_module(x, filters, ratio=ghost_ratio, kernel=kernel,
                                   dw_kernel=ghost_dw_kernel, strides=strides, act=act, name=name)

    return ghost_unit


# ---------------------------------------------------------------------------------------------
# MobileNetV3 layer tables (MobileNetV3, MGIC)

V3_LARGE = [  # kernel, expanded, out, squeeze-excite, activation, stride (paper Table 1)
    (3, 16, 16, False, "relu", 1),
    (3, 64, 24, False, "relu", 2),
    (3, 72, 24, False, "relu", 1),
    (5, 72, 40, True, "relu", 2),
    (5, 120, 40, True, "relu", 1),
    (5, 120, 40, True, "relu", 1),
    (3, 240, 80, False, "hard_swish", 2),
    (3, 200, 80, False, "hard_swish", 1),
    (3, 184, 80, False, "hard_swish", 1),
    (3, 184, 80, False, "hard_swish", 1),
    (3, 480, 112, True, "hard_swish", 1),
    (3, 672, 112, True, "hard_swish", 1),
    (5, 672, 160, True, "hard_swish", 2),
    (5, 960, 160, True, "hard_swish", 1),
    (5, 960, 160, True, "hard_swish", 1),
]

V3_SMALL = [  # kernel, expanded, out, squeeze-excite, activation, stride (paper Table 2)
    (3, 16, 16, True, "relu", 2),
    (3, 72, 24, False, "relu", 2),
    (3, 88, 24, False, "relu", 1),
    (5, 96, 40, True, "hard_swish", 2),
    (5, 240, 40, True, "hard_swish", 1),
    (5, 240, 40, True, "hard_swish", 1),
    (5, 120, 48, True, "hard_swish", 1),
    (5, 144, 48, True, "hard_swish", 1),
    (5, 288, 96, True, "hard_swish", 2),
    (5, 576, 96, True, "hard_swish", 1),
    (5, 576, 96, True, "hard_swish", 1),
]



# ---------------------------------------------------------------------------------------------
# CondenseNet / EffCNet: learned group convolutions and group convs


def group_conv(x, filters, kernel, *, groups, condensing, name):
    """Bias-free grouped conv: BlockDiagonalConv2D in training-time models, else Conv2D."""
    conv = knl.BlockDiagonalConv2D if condensing and groups > 1 else L.Conv2D
    return conv(filters, kernel, padding="same", groups=groups, use_bias=False,
                kernel_initializer=conv_initializer(), name=name)(x)


def placeholder_indices(in_channels: int, groups: int, condense_factor: int) -> list[int]:
    """Index layer contents of a condensed model built from scratch: group g reads the in/C
    channels after those of group g-1, wrapping around (the identity when G = C)."""
    per_group = in_channels // condense_factor
    return [(g * per_group + r) % in_channels for g in range(groups) for r in range(per_group)]


def condensed_group_conv(x, filters, *, groups, indices, name):
    """Test-time learned group conv: Index -> grouped 1x1 conv -> Permute, folded into one layer
    (`IndexedGroupConv`: one dense CONV_2D in TFLite, no GATHER or TRANSPOSE)."""
    return knl.IndexedGroupConv(filters, groups=groups, indices=indices, use_bias=False,
                                kernel_initializer=conv_initializer(), name=f"{name}_conv")(x)


def learned_group_conv(x, filters, *, groups, condense_factor, condensing, group_lasso=0.0, name):
    """A learned group 1x1 conv in its training-time (`condensing=True`) or condensed form."""
    if condensing:
        return knl.LearnedGroupConv(filters, groups=groups, condense_factor=condense_factor,
                                    group_lasso=group_lasso, name=name)(x)
    if x.shape[-1] % condense_factor:
        raise ValueError(f"{name}: {x.shape[-1]} input channels do not split by condense_factor={condense_factor}")
    indices = placeholder_indices(x.shape[-1], groups, condense_factor)
    return condensed_group_conv(x, filters, groups=groups, indices=indices, name=name)


# ---------------------------------------------------------------------------------------------
# harmonic (HarDNet) and dense (DenseNet) connectivity (HarDNet, ThreshNet, TripleNet)

DENSE_BOTTLENECK = 128  # 1x1 width of every ThreshNet / TripleNet dense layer (official code)
GROWTH_MULT = 1.7  # HarDNet's m for the ThreshNet / TripleNet harmonic blocks


@dataclasses.dataclass(frozen=True)
class ThreshStage:
    layers: int  # layers in the block
    growth: int  # new channels per dense layer, or the harmonic k
    channels: int  # output channels of the 1x1 transition after the block
    downsample: bool  # 2x2/2 max pool after the transition


def harmonic_links(layer: int) -> list[int]:
    """Earlier layers that `layer` reads: layer - 2^n for every power of two dividing it."""
    return [layer - 2 ** n for n in range(layer.bit_length()) if layer % 2 ** n == 0]


def harmonic_channels(layer: int, growth: int, mult: float) -> int:
    """growth * mult^(links - 1), rounded to an even count as the official code does."""
    channels = float(growth)
    for _ in harmonic_links(layer)[1:]:  # repeated products, so rounding matches the official code
        channels *= mult
    return int(channels + 1) // 2 * 2


def connects_densely(block: int, threshold: int) -> bool:
    """The threshold mechanism: block `block` (1-based) is dense below the threshold."""
    return block < threshold


def layer_links(layer: int, *, dense: bool) -> list[int]:
    """Earlier outputs (0 = block input) that `layer` (1-based) of a block concatenates, in order:
    all of them, oldest first, in a dense block; layer - 2^n for each power of two dividing it,
    nearest first, in a harmonic one."""
    return list(range(layer)) if dense else harmonic_links(layer)


def _pre_activation_conv(x, filters, kernel, *, name):
    x = batch_norm(x, name=f"{name}_bn")
    x = activation(x, "relu", name=f"{name}_relu")
    return L.Conv2D(filters, kernel, padding="same", use_bias=False, name=f"{name}_conv")(x)


def dense_block(x, layers, growth, *, bottleneck=DENSE_BOTTLENECK, name):
    """`layers` dense layers (BN-ReLU-1x1 conv 128, BN-ReLU-3x3 conv growth), each appended to
    its input, so layer k reads the block input and layers 1..k-1 (chained concatenations)."""
    for k in range(1, layers + 1):
        new = _pre_activation_conv(x, bottleneck, 1, name=f"{name}_layer{k}_1")
        new = _pre_activation_conv(new, growth, 3, name=f"{name}_layer{k}_2")
        x = L.Concatenate(name=f"{name}_layer{k}_concat")([x, new])
    return x


def harmonic_block(x, layers, growth, *, act, mult=GROWTH_MULT, name):
    """HarDNet block of 3x3 Conv-BN-act layers; outputs the odd layers and the last one."""
    outputs = [x]
    for k in range(1, layers + 1):
        inputs = [outputs[j] for j in layer_links(k, dense=False)]
        h = inputs[0] if len(inputs) == 1 else L.Concatenate(name=f"{name}_layer{k}_in")(inputs)
        filters = harmonic_channels(k, growth, mult)
        outputs.append(conv_bn(h, filters, 3, act=act, name=f"{name}_layer{k}"))
    kept = [t for i, t in enumerate(outputs) if i % 2 == 1 or i == layers]
    return kept[0] if len(kept) == 1 else L.Concatenate(name=f"{name}_out")(kept)


def pooled_stem(x, channels, *, act):
    """3x3/2 and 3x3 Conv-BN-act, then a 3x3/2 max pool: a quarter of the input resolution."""
    first, second = channels
    x = conv_bn(x, first, 3, strides=2, act=act, name="stem1")
    x = conv_bn(x, second, 3, act=act, name="stem2")
    return L.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)


def conv_transition(x, channels, *, downsample, act, name):
    """1x1 Conv-BN-act to the stage's channels, then an optional 2x2/2 max pool."""
    x = conv_bn(x, channels, 1, act=act, name=name)
    if downsample:
        x = L.MaxPooling2D(2, strides=2, name=f"{name}_pool")(x)
    return x


# ---------------------------------------------------------------------------------------------
# ShuffleNetV2 units (ShuffleNetV2, AugShuffleNet)


def shuffle_main_branch(x, mid, out, *, stride, name):
    """1x1 conv -> 3x3 depthwise conv (stride) -> 1x1 conv: the processed side of every unit."""
    x = conv_bn(x, mid, 1, name=f"{name}_pw1")
    x = dw_bn(x, 3, strides=stride, name=name)
    return conv_bn(x, out, 1, name=f"{name}_pw2")


def shuffle_shortcut_branch(x, out, *, name):
    """Stride-2 shortcut: 3x3 depthwise conv -> 1x1 conv, so both branches see the full input."""
    x = dw_bn(x, 3, strides=2, name=f"{name}_shortcut")
    return conv_bn(x, out, 1, name=f"{name}_shortcut_pw")


def shuffle_downsample_unit(x, out_channels, *, shortcut, name):
    """Stride 2: both branches read the whole input; their outputs concatenate to out_channels."""
    shortcut_channels = x.shape[-1] if shortcut == "input" else out_channels // 2
    left = shuffle_shortcut_branch(x, shortcut_channels, name=name)
    right = shuffle_main_branch(x, out_channels // 2, out_channels - shortcut_channels, stride=2,
                                name=name)
    return L.Concatenate(name=f"{name}_concat")([left, right])


# ---------------------------------------------------------------------------------------------
# multigrid in channels (MGIC, MGiaD)


def level_groups(channels, group_size, *inner_widths):
    """Groups of a fine level of `channels`, about channels / group_size, or 1 at the coarsest
    level: where fewer than two groups of `group_size` fit, where the channels or `inner_widths`
    (widths inside the block that halve with the channels, e.g. an expanded width) are odd, or
    where no group count >= 2 divides both the coarse width and the inner widths."""
    if channels < 2 * group_size or any(n % 2 for n in (channels, *inner_widths)):
        return 1
    groups = channels // group_size
    while groups > 1 and any(n % groups for n in (channels // 2, *inner_widths)):
        groups -= 1
    return groups


def check_group_size(group_size):
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
        raise ValueError(f"group_size must be an int >= 1, got {group_size!r}")
    return group_size


def check_width(width):
    if isinstance(width, bool) or not isinstance(width, (int, float)) or width <= 0:
        raise ValueError(f"width must be a positive number, got {width!r}")
    return float(width)
