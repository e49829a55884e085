"""ThreshNet: an efficient DenseNet using a threshold mechanism to reduce connections (Ju et al.,
IEEE Access 2022, arXiv 2201.03013), first published as ThresholdNet (arXiv 2108.12604).

Structure follows the official code (RuiyangJu/ThreshNet, C10-demo/models/ThreshNet79.py and
ThreshNet95.py):

- Threshold mechanism: it decides per block how the layers of that block connect. Blocks before
  the threshold connect densely (DenseNet: every layer reads the concatenation of the block input
  and all earlier layers); blocks from the threshold on connect harmonically (HarDNet: layer k
  reads only layers k - 2^n for each 2^n dividing k, so the deeper blocks drop connections layer
  by layer). In ThreshNet79/95 the threshold is block 4: blocks 1-3 dense, 4-5 harmonic.
- Dense layers are pre-activation BN-ReLU-1x1 conv (128 channels, a fixed bottleneck rather than
  DenseNet's 4 * growth) then BN-ReLU-3x3 conv (growth 32), appended to their input.
- Harmonic layers are 3x3 Conv-BN-ReLU with growth * 1.7^(links - 1) channels rounded to an even
  count; a harmonic block outputs its odd layers and its last layer (HarDNet's rule).
- The stem is 3x3/2 and 3x3 Conv-BN-ReLU (32, 64 channels) and a 3x3/2 max pool; each block is
  followed by a 1x1 Conv-BN-ReLU transition and, where configured, a 2x2/2 max pool; the head is
  global average pooling and a linear classifier (no dropout).

Published figures: the official repository's first table (torchstat at 224x224, April 2022)
gives ThreshNet-79 15.32M params and 3.46G "FLOPs", ThreshNet-95 17.14M and 4.07G. The parameter
counts are those of the released code with a 1000-class classifier (the HarDNet-68/85 rows of that
table are the 1000-class ImageNet models too), so the registered default is a (224, 224, 3) input
with 1000 classes; the official code itself trains a 10-class head on 32x32 CIFAR-10
(`classes=10`). The current README keeps the FLOPs but lists the 10-class parameter counts, 14.31M
and 16.19M (this code: 14.37M and 16.19M). torchstat's FLOPs are conv/linear MACs plus one count
per BatchNorm, ReLU and pool element; the profiler counts conv/linear MACs only, 1.0% fewer.

ThresholdNet (arXiv 2108.12604) reports 15.32M parameters and a 13.66% CIFAR-10 error, the figures
of ThreshNet79: it is the same network under its earlier name, with no separate official code, so
it is not registered twice (`threshnet79` builds it).

Stride-2 layers with a 3x3 kernel use TF "same" padding (extra row/column at the bottom/right)
rather than PyTorch's symmetric padding of 1: output shapes, parameters and MACs are identical
and the int8 graph needs no PAD op; ported weights see a one-pixel phase shift at those layers.
"""
from __future__ import annotations

import dataclasses

import tf_keras as keras

from kerasnets import blocks
from kerasnets.hardnet import harmonic_channels, harmonic_links
from kerasnets.registry import register_model

L = keras.layers
DENSE_BOTTLENECK = 128  # 1x1 width of every dense layer in the official code
GROWTH_MULT = 1.7  # HarDNet's m for the harmonic blocks


@dataclasses.dataclass(frozen=True)
class ThreshStage:
    layers: int  # layers in the block
    growth: int  # new channels per dense layer, or the harmonic k
    channels: int  # output channels of the 1x1 transition after the block
    downsample: bool  # 2x2/2 max pool after the transition


@dataclasses.dataclass(frozen=True)
class ThreshNetConfig:
    stages: tuple[ThreshStage, ...]
    threshold: int  # 1-based block index: blocks before it dense, blocks from it on harmonic
    stem_channels: tuple[int, int] = (32, 64)


def _stages(layers, growth, channels, downsample):
    return tuple(ThreshStage(*row) for row in zip(layers, growth, channels, downsample))


CONFIGS = {
    "threshnet79": ThreshNetConfig(threshold=4, stages=_stages(
        layers=(6, 8, 12, 16, 4), growth=(32, 32, 32, 40, 160),
        channels=(128, 192, 288, 480, 960), downsample=(True, True, False, True, False))),
    "threshnet95": ThreshNetConfig(threshold=4, stages=_stages(
        layers=(6, 12, 16, 16, 4), growth=(32, 32, 32, 40, 160),
        channels=(128, 256, 384, 480, 960), downsample=(True, True, False, True, False))),
}


def connects_densely(block: int, threshold: int) -> bool:
    """The threshold mechanism: block `block` (1-based) is dense below the threshold."""
    return block < threshold


def layer_links(layer: int, *, dense: bool) -> list[int]:
    """Earlier outputs (0 = block input) that `layer` (1-based) of a block concatenates, in order:
    all of them, oldest first, in a dense block; layer - 2^n for each power of two dividing it,
    nearest first, in a harmonic one."""
    return list(range(layer)) if dense else harmonic_links(layer)


def _bn_relu_conv(x, filters, kernel, *, name):
    x = blocks.batch_norm(x, name=f"{name}_bn")
    x = blocks.activation(x, "relu", name=f"{name}_relu")
    return L.Conv2D(filters, kernel, padding="same", use_bias=False, name=f"{name}_conv")(x)


def dense_block(x, layers, growth, *, name):
    """`layers` dense layers (BN-ReLU-1x1 conv 128, BN-ReLU-3x3 conv growth), each appended to
    its input, so layer k reads the block input and layers 1..k-1 (chained concatenations)."""
    for k in range(1, layers + 1):
        new = _bn_relu_conv(x, DENSE_BOTTLENECK, 1, name=f"{name}_layer{k}_1")
        new = _bn_relu_conv(new, growth, 3, name=f"{name}_layer{k}_2")
        x = L.Concatenate(name=f"{name}_layer{k}_concat")([x, new])
    return x


def harmonic_block(x, layers, growth, *, act, mult=GROWTH_MULT, name):
    """HarDNet block of 3x3 Conv-BN-act layers; outputs the odd layers and the last one."""
    outputs = [x]
    for k in range(1, layers + 1):
        inputs = [outputs[j] for j in layer_links(k, dense=False)]
        h = inputs[0] if len(inputs) == 1 else L.Concatenate(name=f"{name}_layer{k}_in")(inputs)
        filters = harmonic_channels(k, growth, mult)
        outputs.append(blocks.conv_bn(h, filters, 3, act=act, name=f"{name}_layer{k}"))
    kept = [t for i, t in enumerate(outputs) if i % 2 == 1 or i == layers]
    return kept[0] if len(kept) == 1 else L.Concatenate(name=f"{name}_out")(kept)


def stem(x, channels, *, act):
    """3x3/2 and 3x3 Conv-BN-act, then a 3x3/2 max pool: a quarter of the input resolution."""
    first, second = channels
    x = blocks.conv_bn(x, first, 3, strides=2, act=act, name="stem1")
    x = blocks.conv_bn(x, second, 3, act=act, name="stem2")
    return L.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)


def transition(x, channels, *, downsample, act, name):
    """1x1 Conv-BN-act to the stage's channels, then an optional 2x2/2 max pool."""
    x = blocks.conv_bn(x, channels, 1, act=act, name=name)
    if downsample:
        x = L.MaxPooling2D(2, strides=2, name=f"{name}_pool")(x)
    return x


def reject_variant_kwargs(kwargs, name):
    if kwargs:
        raise TypeError(f"{name} takes no variant arguments, got {', '.join(sorted(kwargs))}")


def _threshnet(config: ThreshNetConfig, *, input_shape, classes, include_top, pooling,
               classifier_activation, name, **kwargs) -> keras.Model:
    reject_variant_kwargs(kwargs, name)
    inputs = blocks.model_input(input_shape)
    x = stem(inputs, config.stem_channels, act="relu")
    for i, stage in enumerate(config.stages, start=1):
        if connects_densely(i, config.threshold):
            x = dense_block(x, stage.layers, stage.growth, name=f"block{i}")
        else:
            x = harmonic_block(x, stage.layers, stage.growth, act="relu", name=f"block{i}")
        x = transition(x, stage.channels, downsample=stage.downsample, act="relu",
                       name=f"transition{i}")
    x = blocks.classifier_head(x, include_top=include_top, pooling=pooling, classes=classes,
                               classifier_activation=classifier_activation)
    return keras.Model(inputs, x, name=name)


_PAPER = "IEEE Access 2022, arXiv 2201.03013 (as ThresholdNet: arXiv 2108.12604)"
_SOURCE = ("official repository RuiyangJu/ThreshNet: its first torchstat table at 224x224 "
           "(params of the released code with a 1000-class head; FLOPs = conv/linear MACs plus "
           "BN/ReLU/pool elements, the profiler's conv/linear MACs are 1.0% lower)")
_NOTES = ("official code trains classes=10 on 32x32 CIFAR-10; figures at 224x224, 1000 classes; "
          "blocks 1-3 dense, 4-5 harmonic; min_size is the total stride")


@register_model(paper=_PAPER, params=15.32e6, macs=3.46e9, input_shape=(224, 224, 3),
                classes=1000, min_size=32, source=_SOURCE, notes=_NOTES)
def threshnet79(*, input_shape, classes, include_top, pooling, classifier_activation,
                **kwargs) -> keras.Model:
    return _threshnet(CONFIGS["threshnet79"], input_shape=input_shape, classes=classes,
                      include_top=include_top, pooling=pooling,
                      classifier_activation=classifier_activation, name="threshnet79", **kwargs)


@register_model(paper=_PAPER, params=17.14e6, macs=4.07e9, input_shape=(224, 224, 3),
                classes=1000, min_size=32, source=_SOURCE, notes=_NOTES)
def threshnet95(*, input_shape, classes, include_top, pooling, classifier_activation,
                **kwargs) -> keras.Model:
    return _threshnet(CONFIGS["threshnet95"], input_shape=input_shape, classes=classes,
                      include_top=include_top, pooling=pooling,
                      classifier_activation=classifier_activation, name="threshnet95", **kwargs)
