"""HarDNet: A Low Memory Traffic Network (Chao et al., ICCV 2019, arXiv 1909.00948).

Structure follows the official code (PingoLH/Pytorch-HarDNet, hardnet.py), which defines the
released ImageNet models:

- Harmonic dense block: layer k (1-based; 0 is the block input) reads the concatenation of
  layers k - 2^n for every 2^n dividing k, nearest first, and has growth * m^(links - 1)
  channels rounded to an even number. The block outputs the concatenation of its odd layers and
  its last layer (the block input is not kept).
- Units are Conv-BN-ReLU6. The DS variants replace each 3x3 layer by 1x1 Conv-BN-ReLU6 followed
  by a 3x3 depthwise conv + BN (no activation), their stem's second conv is 1x1, and every
  downsampling is a stride-2 3x3 depthwise conv + BN instead of a max pool.
- Each block is followed by a 1x1 transition Conv-BN-ReLU6, then optionally downsampled.
- Classifier dropout is 0.1 (HarDNet-68), 0.2 (HarDNet-85) or 0.05 (DS); HarDNet-85 also drops
  (0.1) before its last transition.

The official code is the reference for every detail (channel rounding, concatenation order,
dropout placement); the registered figures are its README's (MParam, GMACs), and the builds
measure within 3.1% of them (`profile()`).

Stride-2 layers with a 3x3 kernel use TF "same" padding (extra row/column at the bottom/right)
rather than PyTorch's symmetric padding of 1: output shapes, parameters and MACs are identical
and the int8 graph needs no PAD op; ported weights see a one-pixel phase shift at those layers.
"""
from __future__ import annotations

import dataclasses

import tf_keras as keras

from kerasnets import blocks, registry
from kerasnets.blocks import harmonic_channels, harmonic_links
from kerasnets.registry import Variant

L = keras.layers
ACT = "relu6"


@dataclasses.dataclass(frozen=True)
class HarDStage:
    layers: int  # harmonic dense layers in the block
    growth: int  # k: channels of the layers that read one input
    channels: int  # output channels of the 1x1 transition after the block
    downsample: bool  # halve the resolution after the transition


@dataclasses.dataclass(frozen=True)
class HarDNetConfig:
    stem_channels: tuple[int, int]
    growth_mult: float  # m: channel multiplier per extra link
    stages: tuple[HarDStage, ...]
    depthwise: bool  # DS variant
    head_dropout: float
    last_stage_dropout: float = 0.0  # before the last transition (HarDNet-85)


def _stages(layers, growth, channels, downsample):
    return tuple(HarDStage(*row) for row in zip(layers, growth, channels, downsample))


_HARDNET39 = dict(stem_channels=(24, 48), growth_mult=1.6, stages=_stages(
    layers=(4, 16, 8, 4), growth=(16, 20, 64, 160), channels=(96, 320, 640, 1024),
    downsample=(True, True, True, False)))
_HARDNET68 = dict(stem_channels=(32, 64), growth_mult=1.7, stages=_stages(
    layers=(8, 16, 16, 16, 4), growth=(14, 16, 20, 40, 160), channels=(128, 256, 320, 640, 1024),
    downsample=(True, False, True, True, False)))
_HARDNET85 = dict(stem_channels=(48, 96), growth_mult=1.7, stages=_stages(
    layers=(8, 16, 16, 16, 16, 4), growth=(24, 24, 28, 36, 48, 256),
    channels=(192, 256, 320, 480, 720, 1280), downsample=(True, False, True, False, True, False)))

def _harmonic_layer(x, filters, *, depthwise, name):
    if not depthwise:
        return blocks.conv_bn(x, filters, 3, act=ACT, name=name)
    x = blocks.conv_bn(x, filters, 1, act=ACT, name=name)
    return blocks.dw_bn(x, 3, name=name)


def _harmonic_block(x, stage: HarDStage, mult, *, depthwise, name):
    layers = [x]
    for k in range(1, stage.layers + 1):
        inputs = [layers[j] for j in harmonic_links(k)]
        h = inputs[0] if len(inputs) == 1 else L.Concatenate(name=f"{name}_layer{k}_in")(inputs)
        filters = harmonic_channels(k, stage.growth, mult)
        layers.append(_harmonic_layer(h, filters, depthwise=depthwise, name=f"{name}_layer{k}"))
    # odd layers and the last one leave the block; even ones only feed later layers
    kept = [t for i, t in enumerate(layers) if i % 2 == 1 or i == stage.layers]
    return L.Concatenate(name=f"{name}_out")(kept)


def _downsample(x, *, depthwise, pool_size, name):
    if depthwise:
        return blocks.dw_bn(x, 3, strides=2, name=name)
    padding = "same" if pool_size == 3 else "valid"
    return L.MaxPooling2D(pool_size, strides=2, padding=padding, name=f"{name}_pool")(x)


def _stem(x, config: HarDNetConfig):
    first, second = config.stem_channels
    x = blocks.conv_bn(x, first, 3, strides=2, act=ACT, name="stem1")
    x = blocks.conv_bn(x, second, 1 if config.depthwise else 3, act=ACT, name="stem2")
    return _downsample(x, depthwise=config.depthwise, pool_size=3, name="stem_down")


def _hardnet(config: HarDNetConfig, *, input_shape, classes, include_top, pooling,
             classifier_activation, name) -> keras.Model:
    inputs = blocks.model_input(input_shape)
    x = _stem(inputs, config)
    last = len(config.stages)
    for i, stage in enumerate(config.stages, start=1):
        x = _harmonic_block(x, stage, config.growth_mult, depthwise=config.depthwise,
                            name=f"block{i}")
        if i == last and config.last_stage_dropout:
            x = L.Dropout(config.last_stage_dropout, name=f"block{i}_dropout")(x)
        x = blocks.conv_bn(x, stage.channels, 1, act=ACT, name=f"transition{i}")
        if stage.downsample:
            x = _downsample(x, depthwise=config.depthwise, pool_size=2, name=f"transition{i}_down")
    x = blocks.classifier_head(x, include_top=include_top, pooling=pooling, classes=classes,
                               classifier_activation=classifier_activation,
                               dropout=config.head_dropout)
    return keras.Model(inputs, x, name=name)


_PAPER = "ICCV 2019, arXiv 1909.00948"
_SOURCE = "official code PingoLH/Pytorch-HarDNet: README tables (MParam, GMACs)"


_DS = "depthwise-separable (DS); min_size is the total stride"
_MAXPOOL = "max-pool downsampling; min_size is the total stride"

VARIANTS = [
    Variant("hardnet39ds", dict(config=HarDNetConfig(**_HARDNET39, depthwise=True, head_dropout=0.05)),
            params=3.5e6, macs=0.44e9, notes=_DS),
    Variant("hardnet68ds", dict(config=HarDNetConfig(**_HARDNET68, depthwise=True, head_dropout=0.05)),
            params=4.2e6, macs=0.8e9, notes=_DS),
    Variant("hardnet68", dict(config=HarDNetConfig(**_HARDNET68, depthwise=False, head_dropout=0.1)),
            params=17.6e6, macs=4.3e9, notes=_MAXPOOL),
    Variant("hardnet85", dict(config=HarDNetConfig(**_HARDNET85, depthwise=False, head_dropout=0.2,
                                                   last_stage_dropout=0.1)),
            params=36.7e6, macs=9.1e9, notes=_MAXPOOL),
]
CONFIGS = {row.name: row.args["config"] for row in VARIANTS}

registry.register_variants(_hardnet, VARIANTS, paper=_PAPER, input_shape=(224, 224, 3), classes=1000,
                           min_size=32, source=_SOURCE, figure_source="official code")
