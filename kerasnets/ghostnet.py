"""GhostNet: More Features from Cheap Operations (Han et al., CVPR 2020, arXiv 1911.11907).

Follows the official code (huawei-noah/Efficient-AI-Backbones, ghostnet_pytorch/ghostnet.py)
where the paper is silent or differs:

- Channels at width w are make_divisible(c * w, 4), the stem included; the 1280-wide head is fixed.
- Squeeze-excite reduces to make_divisible(channels / 4, 4) with a ReLU and a hard-sigmoid gate.
- A bottleneck whose shape changes takes a shortcut of kxk depthwise (stride s) + BN + 1x1 conv + BN;
  the paper only speaks of "a downsampling layer".
- The head (global pool -> 1x1 conv 1280 with bias, no BN -> ReLU -> dropout 0.2 -> FC) is the
  MobileNetV3 head (`blocks.conv_head`, whose classifier is a 1x1 conv) and belongs to
  include_top=True; include_top=False ends at the 1x1 conv to 960 channels (x width).
"""
import tf_keras as keras

from kerasnets import blocks, registry
from kerasnets.blocks import conv_head, make_divisible
from kerasnets.registry import Variant

L = keras.layers
_DIVISOR = 4  # channel rounding of the official code (MobileNets use 8)
_HEAD_CHANNELS = 1280


def _squeeze_excite(x, se_ratio, *, name):
    reduced = make_divisible(x.shape[-1] * se_ratio, _DIVISOR)
    return blocks.squeeze_excite(x, reduced, gate="hard_sigmoid", name=name)


def _projection_shortcut(x, filters, *, kernel, stride, name):
    """Shortcut when the bottleneck changes shape: depthwise kxk (stride) + BN, 1x1 conv + BN."""
    x = blocks.dw_bn(x, kernel, strides=stride, name=f"{name}_depthwise")
    return blocks.conv_bn(x, filters, 1, act=None, name=f"{name}_pointwise")


def _ghost_bottleneck(x, expanded, filters, *, kernel, stride, se_ratio, name):
    """Ghost module (ReLU) -> [depthwise kxk stride 2 + BN] -> [SE] -> linear ghost module, + shortcut."""
    y = blocks.ghost_module(x, expanded, act="relu", name=f"{name}_ghost1")
    if stride > 1:
        y = blocks.dw_bn(y, kernel, strides=stride, name=f"{name}_downsample")
    if se_ratio:
        y = _squeeze_excite(y, se_ratio, name=f"{name}_se")
    y = blocks.ghost_module(y, filters, act=None, name=f"{name}_ghost2")
    if stride == 1 and x.shape[-1] == filters:
        shortcut = x
    else:
        shortcut = _projection_shortcut(x, filters, kernel=kernel, stride=stride,
                                        name=f"{name}_shortcut")
    return L.Add(name=f"{name}_add")([y, shortcut])


def _ghostnet(*, width, input_shape, classes, include_top, pooling, classifier_activation, name,
              stages=(), dropout=0.2) -> keras.Model:
    stages = stages or STAGES  # the paper's table unless a caller gives another
    inputs = blocks.model_input(input_shape)
    x = blocks.conv_bn(inputs, make_divisible(16 * width, _DIVISOR), 3, strides=2, act="relu",
                       name="stem")
    for i, (kernel, expanded, out, se_ratio, stride) in enumerate(stages, start=1):
        x = _ghost_bottleneck(x, make_divisible(expanded * width, _DIVISOR),
                              make_divisible(out * width, _DIVISOR), kernel=kernel, stride=stride,
                              se_ratio=se_ratio, name=f"block{i}")
    last_expanded = stages[-1][1]  # the final 1x1 conv widens to the last expansion size
    x = blocks.conv_bn(x, make_divisible(last_expanded * width, _DIVISOR), 1, act="relu",
                       name="last")
    outputs = conv_head(x, include_top=include_top, pooling=pooling, classes=classes,
                        classifier_activation=classifier_activation, dropout=dropout,
                        hidden=_HEAD_CHANNELS, hidden_act="relu")
    return keras.Model(inputs, outputs, name=name)


# One row per Ghost bottleneck, in the order of the paper's architecture table:
# kernel, expansion size, output channels, squeeze-excite ratio, stride
STAGES = [
    (3, 16, 16, 0, 1),
    (3, 48, 24, 0, 2),
    (3, 72, 24, 0, 1),
    (5, 72, 40, 0.25, 2),
    (5, 120, 40, 0.25, 1),
    (3, 240, 80, 0, 2),
    (3, 200, 80, 0, 1),
    (3, 184, 80, 0, 1),
    (3, 184, 80, 0, 1),
    (3, 480, 112, 0.25, 1),
    (3, 672, 112, 0.25, 1),
    (5, 672, 160, 0.25, 2),
    (5, 960, 160, 0, 1),
    (5, 960, 160, 0.25, 1),
    (5, 960, 160, 0, 1),
    (5, 960, 160, 0.25, 1),
]

_PAPER = "arXiv 1911.11907"
_SOURCE = ("paper, ImageNet comparison table; layout from huawei-noah/Efficient-AI-Backbones "
           "ghostnet_pytorch/ghostnet.py")


VARIANTS = [  # the width is fixed by the name; `dropout` may be passed
    Variant("ghostnet_030", dict(width=0.3), params=1_910_908, macs=21_498_024,
            figure_source="this implementation", source="kerasnets.profile of this code at 224x224",
            notes="width 0.3 is not in the paper: params/MACs measured here (1000 classes)"),
    Variant("ghostnet_050", dict(width=0.5), params=2.6e6, macs=42e6,
            notes="width 0.5, channels rounded to multiples of 4"),
    Variant("ghostnet_100", dict(width=1.0), params=5.2e6, macs=141e6, notes="width 1.0"),
    Variant("ghostnet_130", dict(width=1.3), params=7.3e6, macs=226e6,
            notes="width 1.3, channels rounded to multiples of 4"),
]

registry.register_variants(_ghostnet, VARIANTS, paper=_PAPER, input_shape=(224, 224, 3), classes=1000,
                           min_size=32, source=_SOURCE, options=("dropout",))
