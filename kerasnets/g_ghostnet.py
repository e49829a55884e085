"""G-GhostNet: GhostNets on Heterogeneous Devices via Cheap Operations (Han et al., IJCV 2022,
arXiv 2201.03297), the GPU-oriented G-Ghost stage on RegNetX.

A G-Ghost stage of depth n keeps its first and last RegNetX blocks at full width. Between them,
only `raw` of the stage's channels go through the n - 2 "complicated" blocks; the other `cheap`
channels are "ghost" features: a 1x1 conv + BN on the rest of the first block's output, plus the
mix term (global average pool of the first block's output and of every complicated block's
output, concatenated, then 1x1 conv + BN + ReLU + 1x1 conv + BN), added with broadcasting over
space and passed through ReLU. Complicated and ghost features are concatenated and enter the
last block.

Layout and sizes follow the official code (huawei-noah/Efficient-AI-Backbones,
g_ghost_pytorch/g_ghost_regnet.py), whose README maps the paper's four ImageNet points to the
RegNetX it derives from: 3.2GF -> 10.5M/1.8G, 4.0GF -> 15.7M/2.2G, 8.0GF -> 24.6M/4.2G,
16GF -> 32.4M/9.0G. From that code:

- RegNetX blocks: 1x1 conv, 3x3 grouped conv (stride on the first block of a stage), 1x1 conv,
  each with BN, ReLU after the first two; a 1x1 conv + BN projection where the shape changes;
  add, ReLU. The stem is a 3x3 stride-2 conv to 32 channels; the head pools, drops out (0.2)
  and classifies.
- Stage 1 stays a plain RegNetX stage; stages 2-4 are G-Ghost stages when they have more than
  two blocks (so stage 4 of 8.0GF and 16GF, one block each, stays plain).
- The complicated blocks use a group width of int(0.75 * g) and `raw` is the largest multiple
  of it not above half the stage width; `cheap` is the remainder. The first complicated block
  takes the first `raw` channels of the first block's output and has an identity shortcut.

Two deviations in form, not in function:
- The official code concatenates the full-resolution maps and then pools. The mean over space
  of a concatenation is the concatenation of the means, so here each map is pooled first: the
  same values, but TFLite Micro never holds the wide concatenated map in its arena. The pooled
  maps are concatenated in groups of at most 10, the inputs TFLite Micro's CONCATENATION takes.
- The classifier is a 1x1 conv on the pooled 1x1 map (then flattened) rather than a Dense layer:
  the same weights and MACs, but an int8 CONV_2D, which TFLite Micro computes bit for bit as
  LiteRT's reference kernel does; its int8 FULLY_CONNECTED rounds near-ties differently (1 LSB
  on a few outputs in ten thousand to a thousand, so nearly always somewhere among 1000 classes).
"""
import tf_keras as keras

from kerasnets import blocks, registry
from kerasnets.registry import Variant

L = keras.layers
STEM_CHANNELS = 32
CHEAP_RATIO = 0.5  # share of a G-Ghost stage's channels that come from cheap operations
COMPLICATED_GROUP_WIDTH_SCALE = 0.75  # the complicated blocks' group width relative to the stage's
HEAD_DROPOUT = 0.2
TFLM_MAX_CONCAT_INPUTS = 10  # TFLite Micro's CONCATENATION prepares at most this many inputs

VARIANTS = {  # RegNetX name -> (blocks per stage, stage widths, group width): pycls RegNetX
    # configurations, as in the official G-Ghost code
    "032": ((2, 6, 15, 2), (96, 192, 432, 1008), 48),
    "040": ((2, 5, 14, 2), (80, 240, 560, 1360), 40),
    "080": ((2, 5, 15, 1), (80, 240, 720, 1920), 120),
    "160": ((2, 6, 13, 1), (256, 512, 896, 2048), 128),
}


def _x_block(x, width, *, stride, group_width, name):
    """RegNetX block (bottleneck ratio 1): 1x1, 3x3 grouped (stride), 1x1, + shortcut, ReLU."""
    groups = width // min(width, group_width)
    y = blocks.conv_bn(x, width, 1, name=f"{name}_a")
    y = blocks.conv_bn(y, width, 3, strides=stride, groups=groups, name=f"{name}_b")
    y = blocks.conv_bn(y, width, 1, act=None, name=f"{name}_c")
    if stride != 1 or x.shape[-1] != width:
        x = blocks.conv_bn(x, width, 1, strides=stride, act=None, name=f"{name}_proj")
    y = L.Add(name=f"{name}_add")([x, y])
    return blocks.activation(y, "relu", name=f"{name}_out")


def _plain_stage(x, width, depth, *, group_width, name):
    for index in range(1, depth + 1):
        x = _x_block(x, width, stride=2 if index == 1 else 1, group_width=group_width,
                     name=f"{name}_block{index}")
    return x


def _complicated_group_width(group_width):
    return int(group_width * COMPLICATED_GROUP_WIDTH_SCALE)


def ghost_split(width, group_width):
    """(raw, cheap) channels of a G-Ghost stage: raw is the largest multiple of the complicated
    blocks' group width not above (1 - CHEAP_RATIO) * width; cheap is the rest."""
    step = _complicated_group_width(group_width)
    raw = int(width * (1 - CHEAP_RATIO) / step) * step
    return raw, width - raw


def _concatenate(tensors, *, name):
    """Channel concatenation, nested so that no CONCATENATION has more inputs than TFLite Micro
    accepts (stage 3 mixes up to 14 pooled maps)."""
    if len(tensors) <= TFLM_MAX_CONCAT_INPUTS:
        return L.Concatenate(name=name)(tensors)
    step = TFLM_MAX_CONCAT_INPUTS
    parts = [tensors[i:i + step] for i in range(0, len(tensors), step)]
    parts = [p[0] if len(p) == 1 else L.Concatenate(name=f"{name}_part{i}")(p)
             for i, p in enumerate(parts, start=1)]
    return _concatenate(parts, name=name)


def _mix(features, cheap, *, name):
    """The mix term: pooled first-block and complicated-block features -> `cheap` channels (1x1)."""
    pooled = [L.GlobalAveragePooling2D(keepdims=True, name=f"{name}_pool{i}")(f)
              for i, f in enumerate(features)]
    m = _concatenate(pooled, name=f"{name}_concat")
    m = blocks.conv_bn(m, cheap, 1, name=f"{name}_reduce")
    return blocks.conv_bn(m, cheap, 1, act=None, name=f"{name}_expand")


def _g_ghost_stage(x, width, depth, *, group_width, name):
    """First block, complicated blocks on `raw` channels, cheap features + mix, last block."""
    raw, cheap = ghost_split(width, group_width)
    if raw < 1 or depth < 3:
        raise ValueError(f"{name}: a G-Ghost stage needs depth >= 3 and width > group width; "
                         f"got depth={depth}, width={width}, group_width={group_width}")
    first = _x_block(x, width, stride=2, group_width=group_width, name=f"{name}_block1")
    complicated = blocks.channel_slice(first, 0, raw, name=f"{name}_raw")
    mixed = [first]
    for index in range(2, depth):
        complicated = _x_block(complicated, raw, stride=1,
                               group_width=_complicated_group_width(group_width),
                               name=f"{name}_block{index}")
        mixed.append(complicated)
    ghost = blocks.channel_slice(first, raw, cheap, name=f"{name}_ghost_in")
    ghost = blocks.conv_bn(ghost, cheap, 1, act=None, name=f"{name}_cheap")
    ghost = L.Add(name=f"{name}_ghost_add")([ghost, _mix(mixed, cheap, name=f"{name}_mix")])
    ghost = blocks.activation(ghost, "relu", name=f"{name}_ghost_relu")
    x = L.Concatenate(name=f"{name}_concat")([complicated, ghost])
    return _x_block(x, width, stride=1, group_width=group_width, name=f"{name}_block{depth}")


def _classifier_head(x, *, include_top, pooling, classes, classifier_activation):
    """Pool, dropout, 1x1 conv classifier, flatten (see the module docstring)."""
    if not include_top:
        return blocks.classifier_head(x, include_top=False, pooling=pooling, classes=classes,
                                      classifier_activation=classifier_activation)
    x = L.GlobalAveragePooling2D(keepdims=True, name="head_pool")(x)
    x = L.Dropout(HEAD_DROPOUT, name="head_dropout")(x)
    x = L.Conv2D(classes, 1, activation=classifier_activation, name="head_fc")(x)
    return L.Flatten(name="head_flatten")(x)


def _is_g_ghost_stage(index, depth):
    """As the official code: never stage 1; stages 2 and 4 with more than two blocks; stage 3
    always (it has more than two blocks in every RegNetX)."""
    return index > 1 and depth > 2


def _g_ghost_regnetx(*, variant, input_shape, classes, include_top, pooling, classifier_activation,
                     name) -> keras.Model:
    depths, widths, group_width = VARIANTS[variant]
    inputs = blocks.model_input(input_shape)
    x = blocks.conv_bn(inputs, STEM_CHANNELS, 3, strides=2, name="stem")
    for index, (depth, width) in enumerate(zip(depths, widths), start=1):
        stage = _g_ghost_stage if _is_g_ghost_stage(index, depth) else _plain_stage
        x = stage(x, width, depth, group_width=group_width, name=f"stage{index}")
    outputs = _classifier_head(x, include_top=include_top, pooling=pooling, classes=classes,
                               classifier_activation=classifier_activation)
    return keras.Model(inputs, outputs, name=name)


PAPER = "arXiv 2201.03297"
SOURCE = ("paper (ImageNet results of G-Ghost RegNet) and the official code's README "
          "(huawei-noah/Efficient-AI-Backbones g_ghost_pytorch), which names the RegNetX of each point")
# The registered models (the variant table; `VARIANTS` above holds the RegNetX configurations)
MODELS = [
    Variant("g_ghost_regnetx_032", dict(variant="032"), params=10.5e6, macs=1.8e9,
            notes="RegNetX-3.2GF with G-Ghost stages 2 and 3"),
    Variant("g_ghost_regnetx_040", dict(variant="040"), params=15.7e6, macs=2.2e9,
            notes="RegNetX-4.0GF with G-Ghost stages 2 and 3"),
    Variant("g_ghost_regnetx_080", dict(variant="080"), params=24.6e6, macs=4.2e9,
            notes="RegNetX-8.0GF with G-Ghost stages 2 and 3 (stage 4 has one block)"),
    Variant("g_ghost_regnetx_160", dict(variant="160"), params=32.4e6, macs=9.0e9,
            notes="RegNetX-16GF with G-Ghost stages 2 and 3 (stage 4 has one block)"),
]

registry.register_variants(_g_ghost_regnetx, MODELS, paper=PAPER, input_shape=(224, 224, 3),
                           classes=1000, min_size=32, source=SOURCE)
