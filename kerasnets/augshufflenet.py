"""AugShuffleNet: Communicate More, Compute Less (Ye, arXiv 2203.06589), CIFAR-10 variants.

The AugShuffle unit splits its c input channels three ways: two "bank" parts of (c - r*c)/2
channels each and a conv part of r*c channels (r = 3/8; 1/2 in the first stage). The conv part
goes through a linear 1x1 conv + BN and a 3x3 depthwise conv + BN; its output is cut in halves.
The second half crosses over to join the second bank part in a 1x1 conv + BN + ReLU (c/2
channels), while the first half joins the first bank part untouched: the output concatenates
[first half, first bank part, fused], and a channel shuffle with 2 groups interleaves the
untouched and the fused halves for the next unit. Compared with ShuffleNetV2, a unit runs the
depthwise conv on 3/8 of the channels instead of 1/2 and exchanges features between the bank
and the conv path inside the unit as well as across units.

Layout from the author's code (ohmydroid/AugShuffleNet-Plus, models/augshufflenetv2.py, whose
README also gives the CIFAR-10 sizes used here): a 3x3 stride-1 stem with 24 channels and no
max-pool; stages of one ShuffleNetV2 stride-2 unit (half of the output channels on each branch)
and 3, 7 and 3 AugShuffle units; a 1x1 conv to 1024 channels, global pooling and the
classifier. Widths are (48, 96, 192) at 0.5x, (120, 240, 480) at 1.0x and (176, 352, 704) at
1.5x (1.0x uses 120 rather than ShuffleNetV2's 116 so that the 3/8 split stays even). That
repository is AugShuffleNet with its channel shuffle removed ("Plus"); the shuffle is restored
here where the author's first version of the file had it, at the end of each AugShuffle unit.
Shuffles and splits are rank-4 reshapes/transposes and strided slices (kerasnets.blocks), which
TFLite Micro and CMSIS-NN run. The classifier is a 1x1 conv on the pooled 1x1 map, flattened:
the weights and MACs of the official Linear layer, but an int8 CONV_2D, which TFLite Micro
computes bit for bit as LiteRT's reference kernel does (its FULLY_CONNECTED rounds near-ties
differently, 1 LSB on a few outputs in a thousand).
"""
import tf_keras as keras

from kerasnets import blocks, registry
from kerasnets.blocks import shuffle_downsample_unit
from kerasnets.registry import Variant

L = keras.layers
STEM_CHANNELS = 24
LAST_CHANNELS = 1024
UNITS_PER_STAGE = (3, 7, 3)  # AugShuffle units after the stride-2 unit of each stage
SPLIT_RATIOS = (0.5, 0.375, 0.375)  # conv-path share r per stage (official code)
WIDTHS = {0.5: (48, 96, 192), 1.0: (120, 240, 480), 1.5: (176, 352, 704)}


def augshuffle_split(channels, ratio):
    """(bank, conv) channels of a unit: two bank parts of `bank` and a conv part of `conv`."""
    conv = int(channels * ratio)
    bank = (channels - conv) // 2
    if 2 * bank + conv != channels or conv % 2:
        raise ValueError(f"an AugShuffle unit with split ratio {ratio} needs an even conv part and "
                         f"an even remainder; {channels} channels give conv={conv}")
    return bank, conv


def _augshuffle_unit(x, *, ratio, name):
    """Three-way split, conv path, crossover of half of it into a fused 1x1, concat, shuffle."""
    channels = x.shape[-1]
    bank, conv = augshuffle_split(channels, ratio)
    bank1 = blocks.channel_slice(x, 0, bank, name=f"{name}_bank1")
    bank2 = blocks.channel_slice(x, bank, bank, name=f"{name}_bank2")
    y = blocks.channel_slice(x, 2 * bank, conv, name=f"{name}_conv_in")
    y = blocks.conv_bn(y, conv, 1, act=None, name=f"{name}_pw1")
    y = blocks.dw_bn(y, 3, name=name)
    kept = blocks.channel_slice(y, 0, conv // 2, name=f"{name}_kept")
    crossed = blocks.channel_slice(y, conv // 2, conv // 2, name=f"{name}_crossed")
    fused = L.Concatenate(name=f"{name}_crossover")([crossed, bank2])
    fused = blocks.conv_bn(fused, channels // 2, 1, name=f"{name}_pw2")
    x = L.Concatenate(name=f"{name}_concat")([kept, bank1, fused])
    return blocks.channel_shuffle(x, 2, name=f"{name}_shuffle")


def _classifier_head(x, *, include_top, pooling, classes, classifier_activation):
    if not include_top:
        return blocks.classifier_head(x, include_top=False, pooling=pooling, classes=classes,
                                      classifier_activation=classifier_activation)
    x = L.GlobalAveragePooling2D(keepdims=True, name="head_pool")(x)
    x = L.Conv2D(classes, 1, activation=classifier_activation, name="head_fc")(x)
    return L.Flatten(name="head_flatten")(x)


def _augshufflenet(*, width, input_shape, classes, include_top, pooling, classifier_activation,
                   name) -> keras.Model:
    inputs = blocks.model_input(input_shape)
    x = blocks.conv_bn(inputs, STEM_CHANNELS, 3, name="stem")
    stages = zip(WIDTHS[width], UNITS_PER_STAGE, SPLIT_RATIOS)
    for stage, (channels, units, ratio) in enumerate(stages, start=2):
        # ShuffleNetV2's CIFAR stride-2 unit: half of the output channels on each branch
        x = shuffle_downsample_unit(x, channels, shortcut="half_output", name=f"stage{stage}_unit1")
        for unit in range(2, units + 2):
            x = _augshuffle_unit(x, ratio=ratio, name=f"stage{stage}_unit{unit}")
    x = blocks.conv_bn(x, LAST_CHANNELS, 1, name="conv5")
    outputs = _classifier_head(x, include_top=include_top, pooling=pooling, classes=classes,
                               classifier_activation=classifier_activation)
    return keras.Model(inputs, outputs, name=name)


PAPER = "arXiv 2203.06589"
SOURCE = ("ohmydroid/AugShuffleNet-Plus README (CIFAR-10 table, MAdds) and "
          "models/augshufflenetv2.py, by the author of AugShuffleNet")
VARIANTS = [
    Variant("augshufflenet_050_cifar", dict(width=0.5), params=0.33e6, macs=10.2e6, notes="0.5x"),
    Variant("augshufflenet_100_cifar", dict(width=1.0), params=1.21e6, macs=43.6e6,
            notes="1.0x with stage widths 120/240/480"),
    Variant("augshufflenet_150_cifar", dict(width=1.5), params=2.22e6, macs=85.4e6, notes="1.5x"),
]

registry.register_variants(_augshufflenet, VARIANTS, paper=PAPER, input_shape=(32, 32, 3), classes=10,
                           min_size=8, source=SOURCE, figure_source="official code")
