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

from kerasnets import blocks, registry
from kerasnets.blocks import (ThreshStage, conv_transition, connects_densely,  # noqa: F401
                              dense_block, harmonic_block, layer_links, pooled_stem)
from kerasnets.registry import Variant

L = keras.layers


@dataclasses.dataclass(frozen=True)
class ThreshNetConfig:
    stages: tuple[ThreshStage, ...]
    threshold: int  # 1-based block index: blocks before it dense, blocks from it on harmonic
    stem_channels: tuple[int, int] = (32, 64)


def _stages(layers, growth, channels, downsample):
    return tuple(ThreshStage(*row) for row in zip(layers, growth, channels, downsample))




def _threshnet(config: ThreshNetConfig, *, input_shape, classes, include_top, pooling,
               classifier_activation, name) -> keras.Model:
    inputs = blocks.model_input(input_shape)
    x = pooled_stem(inputs, config.stem_channels, act="relu")
    for i, stage in enumerate(config.stages, start=1):
        if connects_densely(i, config.threshold):
            x = dense_block(x, stage.layers, stage.growth, name=f"block{i}")
        else:
            x = harmonic_block(x, stage.layers, stage.growth, act="relu", name=f"block{i}")
        x = conv_transition(x, stage.channels, downsample=stage.downsample, act="relu",
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


VARIANTS = [
    Variant("threshnet79", dict(config=ThreshNetConfig(threshold=4, stages=_stages(
        layers=(6, 8, 12, 16, 4), growth=(32, 32, 32, 40, 160),
        channels=(128, 192, 288, 480, 960), downsample=(True, True, False, True, False)))),
        params=15.32e6, macs=3.46e9),
    Variant("threshnet95", dict(config=ThreshNetConfig(threshold=4, stages=_stages(
        layers=(6, 12, 16, 16, 4), growth=(32, 32, 32, 40, 160),
        channels=(128, 256, 384, 480, 960), downsample=(True, True, False, True, False)))),
        params=17.14e6, macs=4.07e9),
]
CONFIGS = {row.name: row.args["config"] for row in VARIANTS}

registry.register_variants(_threshnet, VARIANTS, paper=_PAPER, input_shape=(224, 224, 3), classes=1000,
                           min_size=32, source=_SOURCE, notes=_NOTES, figure_source="official code")
