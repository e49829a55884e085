"""MobileNet V1, V2 and V3 (arXiv 1704.04861, 1801.04381, 1905.02244) after their official TF code.

Layouts follow TF-slim / keras applications, the official implementations:

- V1 uses ReLU6 as the TF-slim code (the paper writes ReLU).
- V2 has 3.50M trainable parameters in its code (the paper's table rounds to 3.4M); the figure
  registered is the code's.
- V3-Small: the paper's Table 2 puts squeeze-excite on the last 1x1 conv (576); the official code
  does not, and neither does this module. Squeeze-excite widths are make_divisible(expanded / 4, 8)
  as in the code (the paper says "1/4 of the expansion layer").
- The V3 head (pool -> 1x1 conv 1280/1024 with bias, no BN -> hard-swish -> dropout -> FC)
  belongs to include_top=True; include_top=False ends at the last 1x1 conv (960/576), before
  the pooling.
- Every classifier is a 1x1 conv on the pooled map, as keras applications MobileNet/V3 write it
  (the same weights and MACs as a Dense layer); see `blocks.conv_head` for why.
- Width: V2/V3 round channels with make_divisible(c * width, 8); V1 truncates int(c * width);
  the last 1280/1024 channels grow with width > 1 only (keras applications, TF-slim).

Padding is "same" everywhere: TensorFlow's asymmetric "same" for stride 2 equals the explicit
padding of keras applications, and converts to a single CONV_2D/DEPTHWISE_CONV_2D in TFLite.
"""
import tf_keras as keras

from kerasnets import blocks, registry
from kerasnets.blocks import V3_LARGE, V3_SMALL, conv_head, make_divisible  # noqa: F401
from kerasnets.registry import Variant

L = keras.layers


# ---------------------------------------------------------------------------------------------
# blocks


def _depthwise_separable(x, filters, *, stride, name):
    """MobileNetV1 unit: 3x3 depthwise + BN + ReLU6, then 1x1 pointwise + BN + ReLU6."""
    x = blocks.dw_bn(x, 3, strides=stride, act="relu6", name=f"{name}_depthwise")
    return blocks.conv_bn(x, filters, 1, act="relu6", name=f"{name}_pointwise")


def _inverted_residual(x, expanded, filters, *, kernel, stride, act, se_reduced=None, name):
    """MobileNetV2/V3 bottleneck: 1x1 expand, kxk depthwise, optional squeeze-excite, linear 1x1
    projection; identity shortcut when shape is kept. No expand conv when `expanded` equals the
    input width (the first block of every variant)."""
    in_channels = x.shape[-1]
    y = x
    if expanded != in_channels:
        y = blocks.conv_bn(y, expanded, 1, act=act, name=f"{name}_expand")
    y = blocks.dw_bn(y, kernel, strides=stride, act=act, name=f"{name}_depthwise")
    if se_reduced:
        y = blocks.squeeze_excite(y, se_reduced, gate="hard_sigmoid", name=f"{name}_se")
    y = blocks.conv_bn(y, filters, 1, act=None, name=f"{name}_project")
    if stride == 1 and in_channels == filters:
        y = L.Add(name=f"{name}_add")([x, y])
    return y


def _head_channels(channels, width):
    """The last wide layer keeps its size for width <= 1 (keras applications, TF-slim)."""
    return make_divisible(channels * width, 8) if width > 1.0 else channels


# ---------------------------------------------------------------------------------------------
# MobileNetV1

V1_BLOCKS = [  # pointwise channels, stride (TF-slim mobilenet_v1.py, paper Table 1)
    (64, 1),
    (128, 2), (128, 1),
    (256, 2), (256, 1),
    (512, 2), (512, 1), (512, 1), (512, 1), (512, 1), (512, 1),
    (1024, 2), (1024, 1),
]


def _mobilenet_v1(*, width, input_shape, classes, include_top, pooling, classifier_activation,
                  name, dropout=1e-3):
    inputs = blocks.model_input(input_shape)
    x = blocks.conv_bn(inputs, int(32 * width), 3, strides=2, act="relu6", name="stem")
    for i, (filters, stride) in enumerate(V1_BLOCKS, start=1):
        x = _depthwise_separable(x, int(filters * width), stride=stride, name=f"block{i}")
    outputs = conv_head(x, include_top=include_top, pooling=pooling, classes=classes,
                        classifier_activation=classifier_activation, dropout=dropout)
    return keras.Model(inputs, outputs, name=name)


# ---------------------------------------------------------------------------------------------
# MobileNetV2

V2_STAGES = [  # expansion t, channels c, repeats n, first stride s (paper Table 2)
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
]


def _mobilenet_v2(*, width, input_shape, classes, include_top, pooling, classifier_activation,
                  name, dropout=0.0):
    inputs = blocks.model_input(input_shape)
    x = blocks.conv_bn(inputs, make_divisible(32 * width, 8), 3, strides=2, act="relu6",
                       name="stem")
    index = 0
    for expansion, channels, repeats, first_stride in V2_STAGES:
        filters = make_divisible(channels * width, 8)
        for r in range(repeats):
            index += 1
            x = _inverted_residual(x, x.shape[-1] * expansion, filters, kernel=3,
                                   stride=first_stride if r == 0 else 1, act="relu6",
                                   name=f"block{index}")
    # The 1x1 conv to 1280 is part of the features (keras applications, TF-slim).
    x = blocks.conv_bn(x, _head_channels(1280, width), 1, act="relu6", name="last")
    outputs = conv_head(x, include_top=include_top, pooling=pooling, classes=classes,
                        classifier_activation=classifier_activation, dropout=dropout)
    return keras.Model(inputs, outputs, name=name)


# MobileNetV2 for 32x32 inputs, as a family with knobs for searches under a microcontroller budget:
# the V2 table without its 7x7-scale stages (CIFAR maps are 32x32, so two downsamplings after
# the stem's instead of four), expansion `expansion` instead of 6, and an optional last 1x1 conv.
V2_CIFAR_STAGES = [  # channels c, repeats n, first stride s
    (16, 1, 1),
    (24, 2, 1),
    (32, 3, 2),
    (64, 3, 2),
    (96, 2, 1),
]


def mobilenet_v2_cifar(*, width=1.0, expansion=6, stem_stride=2, last_channels=0, input_shape=(32, 32, 3),
                       classes=10, include_top=True, pooling=None, classifier_activation="softmax",
                       name=None, dropout=0.0):
    """MobileNetV2 inverted residuals on CIFAR-sized inputs: width x the V2 channels
    (make_divisible 8), expansion t, a stride-1 or stride-2 stem (stride 2 keeps the expanded
    32x32 maps out of a small TFLite Micro arena) and a last 1x1 conv of `last_channels` (0: none)."""
    if stem_stride not in (1, 2) or expansion < 1 or width <= 0:
        raise ValueError(f"stem_stride must be 1 or 2, expansion >= 1 and width > 0; got {stem_stride}, "
                         f"{expansion}, {width}")
    inputs = blocks.model_input(input_shape)
    x = blocks.conv_bn(inputs, make_divisible(32 * width, 8), 3, strides=stem_stride, act="relu6", name="stem")
    index = 0
    for stage, (channels, repeats, first_stride) in enumerate(V2_CIFAR_STAGES):
        filters = make_divisible(channels * width, 8)
        for r in range(repeats):
            index += 1
            t = 1 if stage == 0 else expansion
            x = _inverted_residual(x, x.shape[-1] * t, filters, kernel=3, stride=first_stride if r == 0 else 1,
                                   act="relu6", name=f"block{index}")
    if last_channels:
        x = blocks.conv_bn(x, last_channels, 1, act="relu6", name="last")
    outputs = conv_head(x, include_top=include_top, pooling=pooling, classes=classes,
                        classifier_activation=classifier_activation, dropout=dropout)
    return keras.Model(inputs, outputs, name=name or f"mobilenet_v2_cifar_{int(round(width * 100)):03d}")


# ---------------------------------------------------------------------------------------------
# MobileNetV3

def _mobilenet_v3(*, table, head_channels, width, input_shape, classes, include_top, pooling,
                  classifier_activation, name, dropout=0.2):
    inputs = blocks.model_input(input_shape)
    x = blocks.conv_bn(inputs, make_divisible(16 * width, 8), 3, strides=2, act="hard_swish",
                       name="stem")
    for i, (kernel, expanded, out, se, act, stride) in enumerate(table, start=1):
        expanded = make_divisible(expanded * width, 8)
        x = _inverted_residual(x, expanded, make_divisible(out * width, 8), kernel=kernel,
                               stride=stride, act=act,
                               se_reduced=make_divisible(expanded / 4, 8) if se else None,
                               name=f"block{i}")
    x = blocks.conv_bn(x, 6 * x.shape[-1], 1, act="hard_swish", name="last")
    outputs = conv_head(x, include_top=include_top, pooling=pooling, classes=classes,
                        classifier_activation=classifier_activation, dropout=dropout,
                        hidden=_head_channels(head_channels, width), hidden_act="hard_swish")
    return keras.Model(inputs, outputs, name=name)


def _mobilenet(*, version, **kwargs) -> keras.Model:
    """The family's builder: MobileNet V1, V2 or V3 (with its layer table) at a width."""
    return {"v1": _mobilenet_v1, "v2": _mobilenet_v2, "v3": _mobilenet_v3}[version](**kwargs)


# ---------------------------------------------------------------------------------------------
# registered variants: the width is fixed by the name; `dropout` may be passed

VARIANTS = [
    Variant("mobilenet_v1_100", dict(version="v1", width=1.0), params=4.2e6, macs=569e6,
            paper="arXiv 1704.04861",
            source="paper Table 8 (1.0 MobileNet-224); layout from TF-slim mobilenet_v1.py",
            notes="ReLU6 and dropout 1e-3 before the classifier as the official TF code"),
    Variant("mobilenet_v2_100", dict(version="v2", width=1.0), params=3.50e6, macs=300e6,
            paper="arXiv 1801.04381", figure_source="official code",
            source="official TF-slim / keras applications MobileNetV2 (3.50M trainable); "
                   "MACs from paper Table 4",
            notes="the paper's Table 4 rounds the parameters to 3.4M"),
    Variant("mobilenet_v3_small_100", dict(version="v3", width=1.0, table=V3_SMALL, head_channels=1024),
            params=2.5e6, macs=56e6, paper="arXiv 1905.02244",
            source="paper Table 3 (MobileNetV3-Small 1.0); layout from TF-slim mobilenet_v3.py "
                   "and keras applications",
            notes="no squeeze-excite on the last 1x1 conv, as the official code (paper Table 2 "
                  "marks one)"),
    Variant("mobilenet_v3_large_100", dict(version="v3", width=1.0, table=V3_LARGE, head_channels=1280),
            params=5.4e6, macs=219e6, paper="arXiv 1905.02244",
            source="paper Table 3 (MobileNetV3-Large 1.0); layout from TF-slim mobilenet_v3.py "
                   "and keras applications"),
]

registry.register_variants(_mobilenet, VARIANTS, input_shape=(224, 224, 3), classes=1000, min_size=32,
                           options=("dropout",))
