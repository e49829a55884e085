"""TripleNet: efficient convolutional neural networks on Raspberry Pi for image classification
(Ju et al., J. Real-Time Image Processing 2023, arXiv 2204.00943).

TripleNet takes ThreshNet's threshold mechanism (kerasnets.threshnet) down to one dense block and
adds a third kind of connection, so its five blocks connect in three ways, as in the official
code (RuiyangJu/TripleNet, cifar10/models/TripleNet_S.py):

- block 1 dense: pre-activation BN-ReLU-1x1 conv (128) and BN-ReLU-3x3 conv (growth 32), each
  layer appended to its input (ThreshNet's dense layer);
- blocks 2-4 harmonic: HarDNet blocks of 3x3 Conv-BN-ReLU6 layers (multiplier 1.7), each block
  output being its odd layers and its last layer;
- block 5 residual: ResNet bottlenecks (1x1 to half the input channels, 3x3, 1x1 to three times
  that, each Conv-BN, ReLU after the addition) with a 1x1 Conv-BN projection shortcut, as every
  bottleneck widens its input by 1.5x.

Blocks 1-4 end in a 1x1 Conv-BN-ReLU6 transition and, where configured, a 2x2/2 max pool; the stem
is 3x3/2 and 3x3 Conv-BN-ReLU6 (32, 64 channels) and a 3x3/2 max pool; the head is global average
pooling, dropout 0.1 and a linear classifier.

Variants, as the official README's table defines them (layers 6-16-16-16 and transition channels
128-192-256-320; growth 32-16-20-40; 2 bottlenecks for S, 3 for B). TripleNet-B is the
repository's first version (TripleNet-B.py, April 2022, and C10-demo, August 2022), which matches
that table; the file under cifar10/ since October 2022 is a wider variant (8 dense layers,
harmonic blocks of 16-18-24 layers, transitions 160-256-320-480, 2 bottlenecks) that the README
does not describe and that does not give its figures (15.2M params with 1000 classes, 5.55G MACs).

Published figures (README): TripleNet-S 9.67M params, 4.17G "FLOPs"; TripleNet-B 12.63M, 4.29G;
torchstat at 224x224. The parameter counts are those of the first version's 1000-class classifier
(TripleNet-S.py/-B.py end in Linear(ch, 1000); the later CIFAR files in Linear(ch, 10), -0.71M and
-1.07M), so the registered default is a (224, 224, 3) input with 1000 classes; `classes=10` gives
the CIFAR-10 model the official code trains at 32x32. torchstat's FLOPs add one count per
BatchNorm/ReLU/pool element to the conv/linear MACs that the profiler counts (0.6% more).

The projection shortcut's conv has a bias in the official code, redundant before its BatchNorm;
it is left out here (-1.2k params for S, -2.3k for B). Stride-2 3x3 layers use TF "same" padding
(see kerasnets.threshnet): same shapes, parameters and MACs, and no PAD op.
"""
from __future__ import annotations

import dataclasses

import tf_keras as keras

from kerasnets import blocks, registry
from kerasnets.blocks import (ThreshStage, connects_densely, conv_transition, dense_block,
                              harmonic_block, pooled_stem)
from kerasnets.registry import Variant

L = keras.layers
ACT = "relu6"  # stem, harmonic layers and transitions; dense and residual layers use ReLU
BOTTLENECK_EXPANSION = 3
THRESHOLD = 2  # ThreshNet's threshold mechanism with only block 1 below it: block 1 dense


@dataclasses.dataclass(frozen=True)
class TripleNetConfig:
    stages: tuple[ThreshStage, ...]  # block 1 dense, then harmonic blocks
    residual_blocks: int  # bottlenecks in the last block
    dropout: float = 0.1
    stem_channels: tuple[int, int] = (32, 64)


def _stages(layers, growth, channels, downsample):
    return tuple(ThreshStage(*row) for row in zip(layers, growth, channels, downsample))


_BLOCKS_1_TO_4 = _stages(layers=(6, 16, 16, 16), growth=(32, 16, 20, 40),
                         channels=(128, 192, 256, 320), downsample=(True, False, True, True))



def bottleneck_planes(in_channels: int) -> int:
    """Width of a residual bottleneck: half its input, so its output is 1.5x the input."""
    return in_channels // 2


def residual_bottleneck(x, planes, *, name):
    """ResNet bottleneck 1x1-3x3-1x1 (x3 expansion) added to a 1x1 projection, then ReLU."""
    out_channels = BOTTLENECK_EXPANSION * planes
    y = blocks.conv_bn(x, planes, 1, act="relu", name=f"{name}_1")
    y = blocks.conv_bn(y, planes, 3, act="relu", name=f"{name}_2")
    y = blocks.conv_bn(y, out_channels, 1, act=None, name=f"{name}_3")
    if x.shape[-1] != out_channels:
        x = blocks.conv_bn(x, out_channels, 1, act=None, name=f"{name}_shortcut")
    x = L.Add(name=f"{name}_add")([x, y])
    return blocks.activation(x, "relu", name=f"{name}_out")


def _triplenet(config: TripleNetConfig, *, input_shape, classes, include_top, pooling,
               classifier_activation, name) -> keras.Model:
    inputs = blocks.model_input(input_shape)
    x = pooled_stem(inputs, config.stem_channels, act=ACT)
    for i, stage in enumerate(config.stages, start=1):
        if connects_densely(i, THRESHOLD):
            x = dense_block(x, stage.layers, stage.growth, name=f"block{i}")
        else:
            x = harmonic_block(x, stage.layers, stage.growth, act=ACT, name=f"block{i}")
        x = conv_transition(x, stage.channels, downsample=stage.downsample, act=ACT,
                            name=f"transition{i}")
    last = len(config.stages) + 1
    for j in range(1, config.residual_blocks + 1):
        x = residual_bottleneck(x, bottleneck_planes(x.shape[-1]), name=f"block{last}_layer{j}")
    x = blocks.classifier_head(x, include_top=include_top, pooling=pooling, classes=classes,
                               classifier_activation=classifier_activation, dropout=config.dropout)
    return keras.Model(inputs, x, name=name)


_PAPER = "J. Real-Time Image Processing 2023, arXiv 2204.00943"
_SOURCE = ("official repository RuiyangJu/TripleNet: README table, torchstat at 224x224 (params "
           "with the first version's 1000-class head; FLOPs = conv/linear MACs plus BN/ReLU/pool "
           "elements, the profiler's conv/linear MACs are 0.6-0.7% lower)")
_NOTES = ("official code trains classes=10 on 32x32 CIFAR-10; figures at 224x224, 1000 classes; "
          "block 1 dense, 2-4 harmonic, 5 residual; min_size is the total stride")


VARIANTS = [
    Variant("triplenet_s", dict(config=TripleNetConfig(stages=_BLOCKS_1_TO_4, residual_blocks=2)),
            params=9.67e6, macs=4.17e9),
    Variant("triplenet_b", dict(config=TripleNetConfig(stages=_BLOCKS_1_TO_4, residual_blocks=3)),
            params=12.63e6, macs=4.29e9,
            notes=_NOTES + "; the README's B (3 bottlenecks), not the wider cifar10/ file"),
]
CONFIGS = {row.name: row.args["config"] for row in VARIANTS}

registry.register_variants(_triplenet, VARIANTS, paper=_PAPER, input_shape=(224, 224, 3), classes=1000,
                           min_size=32, source=_SOURCE, notes=_NOTES, figure_source="official code")
