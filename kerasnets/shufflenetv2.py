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

from kerasnets import blocks
from kerasnets.registry import register_model
from kerasnets.registry import reject_extra_kwargs

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


def _main_branch(x, mid, out, *, stride, name):
    """1x1 conv -> 3x3 depthwise conv (stride) -> 1x1 conv: the processed side of every unit."""
    x = blocks.conv_bn(x, mid, 1, name=f"{name}_pw1")
    x = blocks.dw_bn(x, 3, strides=stride, name=name)
    return blocks.conv_bn(x, out, 1, name=f"{name}_pw2")


def _shortcut_branch(x, out, *, name):
    """Stride-2 shortcut: 3x3 depthwise conv -> 1x1 conv, so both branches see the full input."""
    x = blocks.dw_bn(x, 3, strides=2, name=f"{name}_shortcut")
    return blocks.conv_bn(x, out, 1, name=f"{name}_shortcut_pw")


def _basic_unit(x, *, split, name):
    """Stride 1: shuffle, pass one half through untouched, process the other, concatenate."""
    channels = x.shape[-1]
    half = channels // 2
    # Shuffling with C/2 groups interleaves the halves: the kept half is the even channels.
    groups = half if split == "even_odd" else 2
    x = blocks.channel_shuffle(x, groups, name=f"{name}_shuffle")
    kept = blocks.channel_slice(x, 0, half, name=f"{name}_keep")
    branch = blocks.channel_slice(x, half, channels - half, name=f"{name}_split")
    branch = _main_branch(branch, half, channels - half, stride=1, name=name)
    return L.Concatenate(name=f"{name}_concat")([kept, branch])


def _downsample_unit(x, out_channels, *, shortcut, name):
    """Stride 2: both branches read the whole input; their outputs concatenate to out_channels."""
    shortcut_channels = x.shape[-1] if shortcut == "input" else out_channels // 2
    left = _shortcut_branch(x, shortcut_channels, name=name)
    right = _main_branch(x, out_channels // 2, out_channels - shortcut_channels, stride=2, name=name)
    return L.Concatenate(name=f"{name}_concat")([left, right])


def _shufflenetv2(*, width, layout, input_shape, classes, include_top, pooling,
                  classifier_activation, name) -> keras.Model:
    if width not in WIDTHS:
        raise ValueError(f"width must be one of {sorted(WIDTHS)}, got {width!r}")
    stage_channels, last_channels, dropout = WIDTHS[width]
    inputs = blocks.model_input(input_shape)
    x = blocks.conv_bn(inputs, STEM_CHANNELS, 3, strides=layout.stem_stride, name="stem")
    if layout.stem_pool:
        x = L.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)
    for stage, (channels, repeats) in enumerate(zip(stage_channels, STAGE_REPEATS), start=2):
        x = _downsample_unit(x, channels, shortcut=layout.downsample_shortcut,
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


@register_model(paper=PAPER, params=1.4e6, macs=41e6, input_shape=(224, 224, 3), classes=1000,
                min_size=32, source=IMAGENET_SOURCE, notes="0.5x")
def shufflenetv2_050(*, input_shape, classes, include_top, pooling, classifier_activation,
                     **kwargs) -> keras.Model:
    reject_extra_kwargs("shufflenetv2_050", kwargs)
    return _shufflenetv2(width=0.5, layout=IMAGENET, input_shape=input_shape, classes=classes,
                         include_top=include_top, pooling=pooling,
                         classifier_activation=classifier_activation, name="shufflenetv2_050")


@register_model(paper=PAPER, params=2.3e6, macs=146e6, input_shape=(224, 224, 3), classes=1000,
                min_size=32, source=IMAGENET_SOURCE, notes="1.0x")
def shufflenetv2_100(*, input_shape, classes, include_top, pooling, classifier_activation,
                     **kwargs) -> keras.Model:
    reject_extra_kwargs("shufflenetv2_100", kwargs)
    return _shufflenetv2(width=1.0, layout=IMAGENET, input_shape=input_shape, classes=classes,
                         include_top=include_top, pooling=pooling,
                         classifier_activation=classifier_activation, name="shufflenetv2_100")


@register_model(paper=PAPER, params=3.5e6, macs=299e6, input_shape=(224, 224, 3), classes=1000,
                min_size=32, source=IMAGENET_SOURCE, notes="1.5x")
def shufflenetv2_150(*, input_shape, classes, include_top, pooling, classifier_activation,
                     **kwargs) -> keras.Model:
    reject_extra_kwargs("shufflenetv2_150", kwargs)
    return _shufflenetv2(width=1.5, layout=IMAGENET, input_shape=input_shape, classes=classes,
                         include_top=include_top, pooling=pooling,
                         classifier_activation=classifier_activation, name="shufflenetv2_150")


@register_model(paper=PAPER, params=7.4e6, macs=591e6, input_shape=(224, 224, 3), classes=1000,
                min_size=32, source=IMAGENET_SOURCE, notes="2.0x, dropout 0.2 before the classifier")
def shufflenetv2_200(*, input_shape, classes, include_top, pooling, classifier_activation,
                     **kwargs) -> keras.Model:
    reject_extra_kwargs("shufflenetv2_200", kwargs)
    return _shufflenetv2(width=2.0, layout=IMAGENET, input_shape=input_shape, classes=classes,
                         include_top=include_top, pooling=pooling,
                         classifier_activation=classifier_activation, name="shufflenetv2_200")


@register_model(paper=PAPER, params=0.35e6, macs=10.9e6, input_shape=(32, 32, 3), classes=10,
                min_size=8, source=CIFAR_SOURCE, notes="0.5x, CIFAR stem (stride 1, no max-pool)")
def shufflenetv2_050_cifar(*, input_shape, classes, include_top, pooling, classifier_activation,
                           **kwargs) -> keras.Model:
    reject_extra_kwargs("shufflenetv2_050_cifar", kwargs)
    return _shufflenetv2(width=0.5, layout=CIFAR, input_shape=input_shape, classes=classes,
                         include_top=include_top, pooling=pooling,
                         classifier_activation=classifier_activation, name="shufflenetv2_050_cifar")


@register_model(paper=PAPER, params=1.26e6, macs=45.0e6, input_shape=(32, 32, 3), classes=10,
                min_size=8, source=CIFAR_SOURCE, notes="1.0x, CIFAR stem (stride 1, no max-pool)")
def shufflenetv2_100_cifar(*, input_shape, classes, include_top, pooling, classifier_activation,
                           **kwargs) -> keras.Model:
    reject_extra_kwargs("shufflenetv2_100_cifar", kwargs)
    return _shufflenetv2(width=1.0, layout=CIFAR, input_shape=input_shape, classes=classes,
                         include_top=include_top, pooling=pooling,
                         classifier_activation=classifier_activation, name="shufflenetv2_100_cifar")


@register_model(paper=PAPER, params=2.49e6, macs=94.3e6, input_shape=(32, 32, 3), classes=10,
                min_size=8, source=CIFAR_SOURCE, notes="1.5x, CIFAR stem (stride 1, no max-pool)")
def shufflenetv2_150_cifar(*, input_shape, classes, include_top, pooling, classifier_activation,
                           **kwargs) -> keras.Model:
    reject_extra_kwargs("shufflenetv2_150_cifar", kwargs)
    return _shufflenetv2(width=1.5, layout=CIFAR, input_shape=input_shape, classes=classes,
                         include_top=include_top, pooling=pooling,
                         classifier_activation=classifier_activation, name="shufflenetv2_150_cifar")
