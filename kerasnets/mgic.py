"""MGIC: Multigrid-in-Channels networks (Eliasof, Ephrath, Ruthotto, Treister, arXiv 2011.09128).

An MGIC block replaces a CNN block of width c by a V-cycle over a hierarchy of channel "grids":

    level 0: c channels     grouped block (group size g)  <- x + P(coarse' - coarse)
       | R (grouped 1x1, c -> c/2)                          ^ P (grouped 1x1, c/2 -> c) + BN
    level 1: c/2 channels   grouped block                 <- ...
       ...
    coarsest (< 2g channels): the full CNN block

Restriction R and prolongation P are grouped 1x1 convs with the fine level's groups; coarse group
k spans fine groups 2k and 2k+1, so the groups nest and the full block at the coarsest level
couples every channel without any permutation. Every level but the coarsest holds O(c * g)
weights, so a block's weights grow linearly with c instead of quadratically.

Layout after the authors' code (github.com/BGUCompSci/MultigridInChannelsCNNs, resnetMG.py and
mobilenetv3_MG.py): no smoothing on the way down, a BatchNorm after each prolongation, the block
of the backbone as the smoother on the way up; a level holds c/g groups of g channels (g: the code's
`numberOfFixGroup`), fewer where the channel counts do not divide.

- `mgic_resnet20_cifar`: the CIFAR ResNet-20 of kerasnets.resnet with every basic block an MGIC
  block (smoother: two grouped 3x3 conv-BN + identity + ReLU). A block that changes resolution
  or width starts with a 3x3 depthwise conv (stride 2, channel multiplier c_out / c_in) + BN +
  ReLU, as the authors' code; it replaces the option A/B shortcut.
- `mgic_mobilenet_v3_small` (224): MobileNetV3-Small's stem, layer table and last 1x1 conv
  (kerasnets.mobilenet); every bottleneck an MGIC block whose smoother is the inverted residual
  with grouped 1x1 convs and a grouped squeeze-excite (the expanded width halves with the
  channels). A bottleneck that changes shape starts with its kxk depthwise conv at stride 2
  (when strided) and a 1x1 conv to the new width, each + BN; the authors' code uses a strided
  1x1 conv without BN there (it drops three of four pixels) and a full, quadratic squeeze-excite
  at every level.
- ResNet-56 and MobileNetV3-Large go through the same builders (`_mgic_cifar_resnet(56, ...)`,
  `_mgic_mobilenet_v3(kerasnets.blocks.V3_LARGE, head_channels=1280, ...)`: 0.49M params /
  95.5M MACs and 3.68M / 131.1M); with 526 and 643 layers they stay out of the registry, whose
  harness converts every model.

Classifiers are 1x1 convs on the pooled map (`conv_classifier_head`), not Dense layers.
Figures: every variant registers this implementation's params/MACs, not values from the
paper's tables (CIFAR-10/100, ImageNet), and says so in `source`. The group size g is a
variant argument (`group_size`, default 16), as is `width`.
"""
import math

import tf_keras as keras

from kerasnets import blocks, registry
from kerasnets.blocks import (V3_SMALL, check_group_size, check_width,  # noqa: F401
                              conv_classifier_head, level_groups, make_divisible)
from kerasnets.layers import Difference
from kerasnets.registry import Variant

L = keras.layers
PAPER = "arXiv 2011.09128"
DEFAULT_GROUP_SIZE = 16
CIFAR_STAGE_FILTERS = (16, 32, 64)
MEASURED = ("measured on this implementation (layout from the authors' code, "
            "BGUCompSci/MultigridInChannelsCNNs), not the paper's tables")


# ---------------------------------------------------------------------------------------------
# the channel hierarchy

def restrict(x, groups, *, name):
    """R: grouped 1x1 conv to half the channels, each coarse group fed by one fine group."""
    return L.Conv2D(x.shape[-1] // 2, 1, groups=groups, use_bias=False, name=f"{name}_restrict")(x)


def coarse_correction(x, coarse, solved, groups, *, name):
    """x + BN(P(solved - coarse)): the coarse level's change, prolonged to the fine channels."""
    change = Difference(name=f"{name}_change")([solved, coarse])
    fine = blocks.conv_bn(change, x.shape[-1], 1, groups=groups, act=None, name=f"{name}_prolong")
    return L.Add(name=f"{name}_correct")([x, fine])


def mgic_cycle(x, smoother, *, group_size, expanded=None, name, level=0):
    """V-cycle over channel levels. `smoother(x, groups, level, name=...)` is the backbone's
    block at one level (groups=1: the full block at the coarsest level); `expanded(level)` gives
    a width inside the smoother that halves with the channels (an inverted residual's)."""
    inner = () if expanded is None else (expanded(level),)
    groups = level_groups(x.shape[-1], group_size, *inner)
    level_name = f"{name}_l{level}"
    if groups == 1:
        return smoother(x, 1, level, name=level_name)
    coarse = restrict(x, groups, name=level_name)
    solved = mgic_cycle(coarse, smoother, group_size=group_size, expanded=expanded, name=name,
                        level=level + 1)
    x = coarse_correction(x, coarse, solved, groups, name=level_name)
    return smoother(x, groups, level, name=level_name)


def channel_levels(channels, group_size):
    """Widths of the levels a cycle visits, finest first (for documentation and tests)."""
    widths = [channels]
    while level_groups(widths[-1], group_size) > 1:
        widths.append(widths[-1] // 2)
    return widths


# ---------------------------------------------------------------------------------------------
# MGIC ResNet (CIFAR)

def _residual_smoother(x, groups, level, *, name):
    """ResNet basic block with grouped 3x3 convs: relu(x + BN(conv(relu(BN(conv(x))))))."""
    channels = x.shape[-1]
    y = blocks.conv_bn(x, channels, 3, groups=groups, act="relu", name=f"{name}_conv1")
    y = blocks.conv_bn(y, channels, 3, groups=groups, act=None, name=f"{name}_conv2")
    y = L.Add(name=f"{name}_add")([x, y])
    return blocks.activation(y, "relu", name=f"{name}_out")


def _resnet_transition(x, filters, strides, *, name):
    """3x3 depthwise conv with channel multiplier filters / c_in (stride 2 as the stage starts)."""
    if filters % x.shape[-1]:
        raise ValueError(f"{name}: {filters} channels are not a multiple of the "
                         f"{x.shape[-1]} input channels")
    return blocks.dw_bn(x, 3, strides=strides, depth_multiplier=filters // x.shape[-1], act="relu",
                        name=f"{name}_transition")


def mgic_basic_block(x, filters, *, strides=1, group_size=DEFAULT_GROUP_SIZE, name):
    """MGIC counterpart of a ResNet basic block of `filters` channels."""
    if strides != 1 or x.shape[-1] != filters:
        x = _resnet_transition(x, filters, strides, name=name)
    return mgic_cycle(x, _residual_smoother, group_size=group_size, name=name)


def _mgic_cifar_resnet(depth, *, input_shape, classes, include_top, pooling, classifier_activation,
                       name, width=1.0, group_size=DEFAULT_GROUP_SIZE) -> keras.Model:
    if (depth - 2) % 6:
        raise ValueError(f"CIFAR ResNet depth must be 6n + 2, got {depth}")
    width, group_size = check_width(width), check_group_size(group_size)
    blocks_per_stage = (depth - 2) // 6
    inputs = blocks.model_input(input_shape)
    x = blocks.conv_bn(inputs, int(CIFAR_STAGE_FILTERS[0] * width), 3, name="stem")
    for stage, filters in enumerate(CIFAR_STAGE_FILTERS, start=1):
        for block in range(1, blocks_per_stage + 1):
            strides = 2 if stage > 1 and block == 1 else 1
            x = mgic_basic_block(x, int(filters * width), strides=strides, group_size=group_size,
                                 name=f"stage{stage}_block{block}")
    outputs = conv_classifier_head(x, include_top=include_top, pooling=pooling, classes=classes,
                                   classifier_activation=classifier_activation)
    return keras.Model(inputs, outputs, name=name)


# ---------------------------------------------------------------------------------------------
# MGIC MobileNetV3

def _round_up(value, multiple):
    return multiple * math.ceil(value / multiple)


def grouped_squeeze_excite(x, groups, *, name):
    """Squeeze-excite whose two 1x1 convs keep the level's groups (linear in the width)."""
    channels = x.shape[-1]
    reduced = _round_up(make_divisible(channels / 4, 8), groups)
    s = L.GlobalAveragePooling2D(keepdims=True, name=f"{name}_pool")(x)
    s = L.Conv2D(reduced, 1, groups=groups, name=f"{name}_reduce")(s)
    s = L.ReLU(name=f"{name}_relu")(s)
    s = L.Conv2D(channels, 1, groups=groups, name=f"{name}_expand")(s)
    s = blocks.activation(s, "hard_sigmoid", name=f"{name}_gate")
    return L.Multiply(name=f"{name}_scale")([x, s])


def _inverted_residual_smoother(expanded, kernel, squeeze_excite, act):
    """Inverted residual at a level: grouped 1x1 expand (none where the expanded width equals the
    level's), kxk depthwise, optional grouped squeeze-excite, grouped linear 1x1, identity."""

    def smoother(x, groups, level, *, name):
        channels, wide = x.shape[-1], expanded(level)
        y = x
        if wide != channels:
            y = blocks.conv_bn(y, wide, 1, groups=groups, act=act, name=f"{name}_expand")
        y = blocks.dw_bn(y, kernel, act=act, name=f"{name}_depthwise")
        if squeeze_excite:
            y = grouped_squeeze_excite(y, groups, name=f"{name}_se")
        y = blocks.conv_bn(y, channels, 1, groups=groups, act=None, name=f"{name}_project")
        return L.Add(name=f"{name}_add")([x, y])

    return smoother


def _halving(width):
    """Width at channel level l, halved per level as the channels (level_groups stops the cycle
    before a width turns odd)."""
    return lambda level: width >> level


def mgic_inverted_residual(x, expanded, filters, *, kernel, stride, squeeze_excite, act,
                           group_size=DEFAULT_GROUP_SIZE, name):
    """MGIC counterpart of a MobileNetV3 bottleneck (in -> expanded -> filters)."""
    if stride != 1:
        x = blocks.dw_bn(x, kernel, strides=stride, name=f"{name}_downsample")
    if x.shape[-1] != filters:
        x = blocks.conv_bn(x, filters, 1, act=None, name=f"{name}_transition")
    smoother = _inverted_residual_smoother(_halving(expanded), kernel, squeeze_excite, act)
    return mgic_cycle(x, smoother, group_size=group_size, expanded=_halving(expanded), name=name)


def _mgic_mobilenet_v3(table, *, head_channels, input_shape, classes, include_top, pooling,
                       classifier_activation, name, width=1.0, group_size=DEFAULT_GROUP_SIZE,
                       dropout=0.2):
    width, group_size = check_width(width), check_group_size(group_size)
    inputs = blocks.model_input(input_shape)
    x = blocks.conv_bn(inputs, make_divisible(16 * width, 8), 3, strides=2, act="hard_swish",
                       name="stem")
    for i, (kernel, expanded, out, se, act, stride) in enumerate(table, start=1):
        x = mgic_inverted_residual(x, make_divisible(expanded * width, 8),
                                   make_divisible(out * width, 8), kernel=kernel, stride=stride,
                                   squeeze_excite=se, act=act, group_size=group_size,
                                   name=f"block{i}")
    x = blocks.conv_bn(x, 6 * x.shape[-1], 1, act="hard_swish", name="last")
    head = make_divisible(head_channels * width, 8) if width > 1.0 else head_channels
    outputs = conv_classifier_head(x, include_top=include_top, pooling=pooling, classes=classes,
                                   classifier_activation=classifier_activation, hidden=head,
                                   hidden_act="hard_swish", dropout=dropout)
    return keras.Model(inputs, outputs, name=name)


def _mgic(*, backbone, **kwargs) -> keras.Model:
    """The family's builder: an MGIC CIFAR ResNet (`depth`) or MobileNetV3 (`table`, `head_channels`)."""
    return {"resnet": _mgic_cifar_resnet, "mobilenet_v3": _mgic_mobilenet_v3}[backbone](**kwargs)


# ---------------------------------------------------------------------------------------------
# registered variants: `width` and `group_size` may be passed

VARIANTS = [
    Variant("mgic_resnet20_cifar", dict(backbone="resnet", depth=20), params=163_258, macs=32.21e6,
            input_shape=(32, 32, 3), classes=10, min_size=4,
            notes="ResNet-20 widths 16-32-64, group size 16: stage 1 has a single level "
                  "(the full block), stage 2 two levels, stage 3 three"),
    Variant("mgic_mobilenet_v3_small", dict(backbone="mobilenet_v3", table=V3_SMALL, head_channels=1024),
            params=2_140_237, macs=44.44e6,
            notes="MobileNetV3-Small 1.0 layers, group size 16 (blocks of 40, 48 and 96 "
                  "channels get 2-3 levels, narrower ones stay plain inverted residuals)"),
]

registry.register_variants(_mgic, VARIANTS, paper=PAPER, input_shape=(224, 224, 3), classes=1000,
                           min_size=32, source=MEASURED, figure_source="this implementation",
                           options=("width", "group_size"))
