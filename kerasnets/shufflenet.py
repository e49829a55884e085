"""ShuffleNet v1: An Extremely Efficient CNN for Mobile Devices (Zhang et al., CVPR 2018, arXiv 1707.01083).

Layout of the official code (megvii-model/ShuffleNet-Series, ShuffleNetV1) and mmpretrain: the
channel shuffle sits after the depthwise conv rather than before it as in the paper's Figure 2;
both orders give the same network (a depthwise conv commutes with a channel permutation) and
the later one shuffles a 4x smaller tensor in the stride-2 units. The bottleneck is a quarter of
the stage width in every unit, stride-2 units included, and the first pointwise conv of stage 2
is not grouped (paper, Sec. 3.3).

The paper's 0.5x g=4 net has a 34-channel stage-2 bottleneck, which 4 groups cannot divide; the
bottleneck is rounded up to a multiple of the groups (36), the only change to any width here.
"""
import tf_keras as keras

from kerasnets import blocks, registry
from kerasnets.registry import Variant

L = keras.layers

STAGE_REPEATS = (4, 8, 4)  # units in stages 2, 3, 4; the first unit of each has stride 2
STEM_CHANNELS = 24
STAGE_CHANNELS = {  # groups -> output channels of stages 2-4 at 1.0x (paper Table 1)
    1: (144, 288, 576),
    2: (200, 400, 800),
    3: (240, 480, 960),
    4: (272, 544, 1088),
    8: (384, 768, 1536),
}
PAPER = "arXiv 1707.01083"
SOURCE = ("MACs: paper Table 1 (1.0x) and Table 2 (0.5x), a FLOP there is one multiply-add; "
          "params: the official megvii-model/ShuffleNet-Series ShuffleNetV1 code at this config")


def _round_up(value, multiple):
    return -(-value // multiple) * multiple


def _bottleneck_channels(stage_channels, groups):
    """A quarter of the stage width, rounded up so the grouped 1x1 convs divide it."""
    return _round_up(stage_channels // 4, groups)


def _shuffle_unit(x, stage_channels, *, groups, stride, group_first_pointwise, name):
    """1x1 GConv -> 3x3 DWConv -> shuffle -> 1x1 GConv; identity add (stride 1) or
    3x3 average-pooled shortcut concatenated in front (stride 2)."""
    in_channels = x.shape[-1]
    branch_channels = stage_channels - in_channels if stride == 2 else stage_channels
    if branch_channels % groups:
        raise ValueError(f"{name}: {branch_channels} output channels do not split into groups={groups}")
    mid = _bottleneck_channels(stage_channels, groups)
    y = blocks.conv_bn(x, mid, 1, groups=groups if group_first_pointwise else 1, name=f"{name}_pw1")
    y = blocks.dw_bn(y, 3, strides=stride, name=name)
    if groups > 1:
        y = blocks.channel_shuffle(y, groups, name=f"{name}_shuffle")
    y = blocks.conv_bn(y, branch_channels, 1, groups=groups, act=None, name=f"{name}_pw2")
    if stride == 1:
        y = L.Add(name=f"{name}_add")([x, y])
        return L.ReLU(name=f"{name}_relu")(y)
    shortcut = L.AveragePooling2D(3, strides=2, padding="same", name=f"{name}_shortcut_pool")(x)
    y = L.ReLU(name=f"{name}_relu")(y)
    return L.Concatenate(name=f"{name}_concat")([shortcut, y])


def _stage(x, stage_channels, repeats, *, groups, first_stage, name):
    for i in range(repeats):
        x = _shuffle_unit(x, stage_channels, groups=groups, stride=2 if i == 0 else 1,
                          # stage 2 opens on only 24 channels: too few to group (paper Sec. 3.3)
                          group_first_pointwise=not (first_stage and i == 0),
                          name=f"{name}_unit{i + 1}")
    return x


def _shufflenet(*, groups, width, input_shape, classes, include_top, pooling,
                classifier_activation, name) -> keras.Model:
    if groups not in STAGE_CHANNELS:
        raise ValueError(f"groups must be one of {sorted(STAGE_CHANNELS)}, got {groups!r}")
    inputs = blocks.model_input(input_shape)
    x = blocks.conv_bn(inputs, int(STEM_CHANNELS * width), 3, strides=2, name="stem")
    x = L.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)
    for index, (channels, repeats) in enumerate(zip(STAGE_CHANNELS[groups], STAGE_REPEATS)):
        x = _stage(x, int(channels * width), repeats, groups=groups, first_stage=index == 0,
                   name=f"stage{index + 2}")
    outputs = blocks.classifier_head(x, include_top=include_top, pooling=pooling, classes=classes,
                                     classifier_activation=classifier_activation)
    return keras.Model(inputs, outputs, name=name)


VARIANTS = [
    Variant("shufflenet_g1", dict(groups=1, width=1.0), params=1.53e6, macs=143e6,
            notes="1.0x, g=1: no grouping, no shuffle"),
    Variant("shufflenet_g2", dict(groups=2, width=1.0), params=1.73e6, macs=140e6, notes="1.0x, g=2"),
    Variant("shufflenet_g3", dict(groups=3, width=1.0), params=1.87e6, macs=137e6,
            source=SOURCE + "; 1.87M also in mmpretrain's model zoo",
            notes="1.0x, g=3: the paper's headline model"),
    Variant("shufflenet_g4", dict(groups=4, width=1.0), params=1.97e6, macs=133e6, notes="1.0x, g=4"),
    Variant("shufflenet_g8", dict(groups=8, width=1.0), params=2.43e6, macs=137e6,
            source=SOURCE + "; the megvii README gives 2.4M", notes="1.0x, g=8"),
    Variant("shufflenet_050_g4", dict(groups=4, width=0.5), params=0.78e6, macs=38e6,
            notes="0.5x, g=4 (41.6% top-1 error in Table 2); stage-2 bottleneck 34 -> 36"),
]

# params are the official code's (MACs the paper's)
registry.register_variants(_shufflenet, VARIANTS, paper=PAPER, input_shape=(224, 224, 3), classes=1000,
                           min_size=32, source=SOURCE, figure_source="official code")
