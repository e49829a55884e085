"""ShuffleNet V2: Practical Guidelines for Efficient CNN Architecture Design (Ma et al., ECCV 2018, arXiv 1807.11164).

ImageNet variants follow the official code (megvii-model/ShuffleNet-Series, ShuffleNetV2) where
it differs from the paper's Figure 3: a stride-1 unit shuffles at its start, keeping the even
channels and processing the odd ones, instead of shuffling after its concat (so no shuffle runs
before a stride-2 unit or the last conv, where it would only permute the inputs of convs); and the
shortcut branch of stage 2's stride-2 unit keeps its input width (24 channels) rather than half of
the output. 2.0x has dropout 0.2 before the classifier, as in that code.

CIFAR variants follow the ShuffleNetV2 of the AugShuffleNet author's repository
(ohmydroid/AugShuffleNet-Plus, models/shufflenetv2.py), whose README gives their sizes: a 3x3
stride-1 stem without max-pool, a shuffle with 2 groups at the start of each stride-1 unit that
keeps the first half, and half of the output on each branch of a stride-2 unit.
"""
import dataclasses

import tf_keras as keras

from kerasnets import blocks, registry
from kerasnets.blocks import shuffle_downsample_unit, shuffle_main_branch
from kerasnets.registry import Variant

L = keras.layers

STAGE_REPEATS = (4, 8, 4)  # units in stages 2, 3, 4; the first unit of each has stride 2
STEM_CHANNELS = 24
WIDTHS = {  # width -> (stage 2-4 channels, last 1x1 conv channels, dropout before the classifier)
    0.5: ((48, 96, 192), 1024, 0.0),  # paper Table 5; dropout from the official code
    1.0: ((116, 232, 464), 1024, 0.0),
    1.5: ((176, 352, 704), 1024, 0.0),
    2.0: ((244, 488, 976), 2048, 0.2),
}


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where the official ImageNet code and the CIFAR code differ (see the module docstring)."""

    stem_stride: int
    stem_pool: bool
    split: str  # "even_odd" (shuffle with C/2 groups) or "halves" (shuffle with 2 groups)
    downsample_shortcut: str  # shortcut width of a stride-2 unit: "input" or "half_output"


IMAGENET = Layout(stem_stride=2, stem_pool=True, split="even_odd", downsample_shortcut="input")
CIFAR = Layout(stem_stride=1, stem_pool=False, split="halves", downsample_shortcut="half_output")


def _basic_unit(x, *, split, name):
    """Stride 1: shuffle, pass one half through untouched, process the other, concatenate."""
    channels = x.shape[-1]
    half = channels // 2
    # Shuffling with C/2 groups interleaves the halves: the kept half is the even channels.
    groups = half if split == "even_odd" else 2
    x = blocks.channel_shuffle(x, groups, name=f"{name}_shuffle")
    kept = blocks.channel_slice(x, 0, half, name=f"{name}_keep")
    branch = blocks.channel_slice(x, half, channels - half, name=f"{name}_split")
    branch = shuffle_main_branch(branch, half, channels - half, stride=1, name=name)
    return L.Concatenate(name=f"{name}_concat")([kept, branch])


def _shufflenetv2(*, width, layout, input_shape, classes, include_top, pooling,
                  classifier_activation, name) -> keras.Model:
    if width not in WIDTHS:
        raise ValueError(f"width must be one of {sorted(WIDTHS)}, got {width!r}")
    stage_channels, last_channels, dropout = WIDTHS[width]
    return _build(stage_channels, STAGE_REPEATS, last_channels, dropout, layout=layout, input_shape=input_shape,
                  classes=classes, include_top=include_top, pooling=pooling,
                  classifier_activation=classifier_activation, name=name)


def shufflenetv2_cifar(*, width=0.5, repeats=STAGE_REPEATS, last_channels=1024, input_shape=(32, 32, 3),
                       classes=10, include_top=True, pooling=None, classifier_activation="softmax",
                       name=None) -> keras.Model:
    """The CIFAR ShuffleNetV2 with its knobs free, for fitting a model to a flash and RAM budget:
    `width` (a width of the paper's table takes its channels, any other `width` x (96, 192, 384)
    rounded to even numbers, so that every unit splits in halves), units per stage `repeats` and
    the last 1x1 conv's `last_channels` (1024 in the paper; most of a small model's parameters)."""
    if width <= 0 or last_channels < 1 or len(repeats) != 3 or min(repeats) < 1:
        raise ValueError(f"width must be > 0, last_channels >= 1 and repeats three counts >= 1; got {width!r}, "
                         f"{last_channels!r}, {repeats!r}")
    stage_channels = WIDTHS[width][0] if width in WIDTHS else tuple(2 * max(1, round(width * c / 2))
                                                                   for c in (96, 192, 384))
    variant = f"w{int(round(width * 1000)):04d}_r{'-'.join(map(str, repeats))}_l{last_channels}"
    return _build(stage_channels, tuple(repeats), int(last_channels), 0.0, layout=CIFAR, input_shape=input_shape,
                  classes=classes, include_top=include_top, pooling=pooling,
                  classifier_activation=classifier_activation, name=name or f"shufflenetv2_cifar_{variant}")


def _build(stage_channels, stage_repeats, last_channels, dropout, *, layout, input_shape, classes, include_top,
           pooling, classifier_activation, name) -> keras.Model:
    inputs = blocks.model_input(input_shape)
    x = blocks.conv_bn(inputs, STEM_CHANNELS, 3, strides=layout.stem_stride, name="stem")
    if layout.stem_pool:
        x = L.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)
    for stage, (channels, repeats) in enumerate(zip(stage_channels, stage_repeats), start=2):
        x = shuffle_downsample_unit(x, channels, shortcut=layout.downsample_shortcut,
                                    name=f"stage{stage}_unit1")
        for unit in range(2, repeats + 1):
            x = _basic_unit(x, split=layout.split, name=f"stage{stage}_unit{unit}")
    x = blocks.conv_bn(x, last_channels, 1, name="conv5")
    outputs = blocks.classifier_head(x, include_top=include_top, pooling=pooling, classes=classes,
                                     classifier_activation=classifier_activation,
                                     dropout=dropout)
    return keras.Model(inputs, outputs, name=name)


PAPER = "arXiv 1807.11164"
IMAGENET_SOURCE = ("paper Table 5 (MFLOPs there are multiply-adds) and the official "
                   "megvii-model/ShuffleNet-Series ShuffleNetV2 README")
CIFAR_SOURCE = ("ohmydroid/AugShuffleNet-Plus README (CIFAR-10 table, MAdds) and "
                "models/shufflenetv2.py, by the author of AugShuffleNet (arXiv 2203.06589)")


_CIFAR_STEM = "CIFAR stem (stride 1, no max-pool)"
_CIFAR = dict(input_shape=(32, 32, 3), classes=10, min_size=8, source=CIFAR_SOURCE)

VARIANTS = [
    Variant("shufflenetv2_050", dict(width=0.5, layout=IMAGENET), params=1.4e6, macs=41e6,
            notes="0.5x"),
    Variant("shufflenetv2_100", dict(width=1.0, layout=IMAGENET), params=2.3e6, macs=146e6,
            notes="1.0x"),
    Variant("shufflenetv2_150", dict(width=1.5, layout=IMAGENET), params=3.5e6, macs=299e6,
            notes="1.5x"),
    Variant("shufflenetv2_200", dict(width=2.0, layout=IMAGENET), params=7.4e6, macs=591e6,
            notes="2.0x, dropout 0.2 before the classifier"),
    Variant("shufflenetv2_050_cifar", dict(width=0.5, layout=CIFAR), params=0.35e6, macs=10.9e6,
            **_CIFAR, figure_source="official code", notes="0.5x, " + _CIFAR_STEM),
    Variant("shufflenetv2_100_cifar", dict(width=1.0, layout=CIFAR), params=1.26e6, macs=45.0e6,
            **_CIFAR, figure_source="official code", notes="1.0x, " + _CIFAR_STEM),
    Variant("shufflenetv2_150_cifar", dict(width=1.5, layout=CIFAR), params=2.49e6, macs=94.3e6,
            **_CIFAR, figure_source="official code", notes="1.5x, " + _CIFAR_STEM),
]

registry.register_variants(_shufflenetv2, VARIANTS, paper=PAPER, input_shape=(224, 224, 3), classes=1000,
                           min_size=32, source=IMAGENET_SOURCE)
