"""DenseNet: Densely Connected Convolutional Networks (Huang et al., CVPR 2017, arXiv 1608.06993).

Structure follows the official code (liuzhuang13/DenseNet, Torch) for the CIFAR variants and
keras applications' DenseNet121 for ImageNet:

- Pre-activation units (BN-ReLU-Conv); every layer concatenates its `growth` new maps to its
  input, so a dense block is a chain of `Concatenate` layers (no tensor above 4-D).
- DenseNet-BC adds a 1x1 bottleneck of 4*growth channels before each 3x3 conv and transitions
  keep floor(theta * channels) channels (theta = 0.5).
- Convolutions have no bias (the official code drops it under BN); the classifier has one.
- int8: TFMOT's default 8-bit scheme quantizes a BatchNormalization only straight after a conv,
  so each pre-activation BN on a concatenation or pool is carried by a frozen all-ones 1x1
  depthwise conv (`_bn_relu`). It adds no trainable parameter; `profile()` counts its C*H*W MACs
  because the int8 graph runs it as a DEPTHWISE_CONV_2D (the BN a float graph would run as
  MUL/ADD). The registered MACs are those of the published structure (convs and classifier).

Where paper and official code differ, the official code wins:
- CIFAR stem width: 16 channels for DenseNet (the official code's first version, commit cbb6bff,
  which produced the paper's non-BC results) and 2*growth for DenseNet-BC (its later versions).
  With 16, DenseNet-40 has 1.02M parameters and 264.8M MACs, matching the paper's 1.0M and the
  5.33e8 FLOPs of Network Slimming (arXiv 1708.06519, which counts a MAC as 2 FLOPs); the later
  code's 2k = 24 stem (also in Network Slimming's PyTorch port) gives 1.06M and 282.9M.
- Stride-2 layers of the ImageNet stem use TF "same" padding (extra row/column at the
  bottom/right) instead of the symmetric padding of the Torch code: shapes, parameters and MACs
  are unchanged and the int8 graph needs no PAD op; weights ported from Torch/keras applications
  see a one-pixel phase shift in the stem.
"""
from __future__ import annotations

import dataclasses

import tf_keras as keras

from kerasnets import blocks, registry
from kerasnets.registry import Variant

L = keras.layers


@dataclasses.dataclass(frozen=True)
class DenseNetConfig:
    block_layers: tuple[int, ...]  # dense layers per block
    growth: int  # k: channels each dense layer adds
    bottleneck: bool  # BC: 1x1 conv to 4k before the 3x3 conv
    compression: float  # theta: transition keeps floor(theta * channels)
    stem: str  # "cifar": one 3x3 conv; "imagenet": 7x7/2 conv-BN-ReLU + 3x3/2 max pool
    stem_channels: int


def _bn_relu(x, *, carrier, name):
    """Pre-activation BN-ReLU; `carrier` when no single conv produced x (a concatenation, a pool).

    TFMOT quantizes BatchNormalization only right after a conv, so a frozen all-ones 1x1
    depthwise conv carries it: an identity while training (BN sees the same input), and the
    converter folds BN into its per-channel weight, giving one exact int8 DEPTHWISE_CONV_2D
    (scale, shift, ReLU). Frozen, it adds no trainable parameter.
    """
    if carrier:
        x = L.DepthwiseConv2D(1, use_bias=False, depthwise_initializer="ones", trainable=False,
                              name=f"{name}_carrier")(x)
    x = blocks.batch_norm(x, name=f"{name}_bn")
    return blocks.activation(x, "relu", name=f"{name}_relu")


def _bn_relu_conv(x, filters, kernel, *, carrier=True, name):
    """DenseNet's composite function: BN, ReLU, then a bias-free convolution."""
    x = _bn_relu(x, carrier=carrier, name=name)
    return L.Conv2D(filters, kernel, padding="same", use_bias=False, name=f"{name}_conv")(x)


def _dense_layer(x, growth, *, bottleneck, name):
    """One dense layer: `growth` new maps appended to everything before it."""
    new = x
    if bottleneck:
        new = _bn_relu_conv(new, 4 * growth, 1, name=f"{name}_1x1")
    # after the bottleneck conv, BN-ReLU folds into that conv and needs no carrier
    new = _bn_relu_conv(new, growth, 3, carrier=not bottleneck, name=f"{name}_3x3")
    return L.Concatenate(name=f"{name}_concat")([x, new])


def _dense_block(x, layers, growth, *, bottleneck, name):
    for i in range(layers):
        x = _dense_layer(x, growth, bottleneck=bottleneck, name=f"{name}_layer{i + 1}")
    return x


def _transition(x, compression, *, name):
    """BN-ReLU-1x1 conv to floor(theta * channels), then 2x2 average pooling."""
    filters = int(x.shape[-1] * compression)
    x = _bn_relu_conv(x, filters, 1, name=name)
    return L.AveragePooling2D(2, strides=2, name=f"{name}_pool")(x)


def _stem(x, config: DenseNetConfig):
    if config.stem == "cifar":  # no BN-ReLU: the first dense layer starts with them
        return L.Conv2D(config.stem_channels, 3, padding="same", use_bias=False,
                        name="stem_conv")(x)
    x = blocks.conv_bn(x, config.stem_channels, 7, strides=2, name="stem")
    return L.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)


def _densenet(config: DenseNetConfig, *, input_shape, classes, include_top, pooling,
              classifier_activation, name) -> keras.Model:
    inputs = blocks.model_input(input_shape)
    x = _stem(inputs, config)
    last = len(config.block_layers)
    for i, layers in enumerate(config.block_layers, start=1):
        x = _dense_block(x, layers, config.growth, bottleneck=config.bottleneck, name=f"block{i}")
        if i < last:
            x = _transition(x, config.compression, name=f"transition{i}")
    # the last block's output is still pre-activation: close it with BN-ReLU
    x = _bn_relu(x, carrier=True, name="final")
    x = blocks.classifier_head(x, include_top=include_top, pooling=pooling, classes=classes,
                               classifier_activation=classifier_activation)
    return keras.Model(inputs, x, name=name)


def densenet_cifar(*, depth=100, growth=12, bottleneck=True, compression=0.5, input_shape=(32, 32, 3), classes=10,
                   include_top=True, pooling=None, classifier_activation="softmax", name=None) -> keras.Model:
    """The CIFAR DenseNet (three dense blocks, a 2k-channel stem for DenseNet-BC, 16 otherwise) with
    its knobs free, for fitting a model to a flash and RAM budget: `depth` L (each block has
    (L - 4) / 6 layers with a bottleneck, (L - 4) / 3 without), `growth` k and the transitions'
    `compression` theta. depth=100, growth=12 is densenet_bc_100_k12_cifar."""
    per_layer = 6 if bottleneck else 3
    if growth < 1 or not 0 < compression <= 1 or depth < 4 + per_layer or (depth - 4) % per_layer:
        raise ValueError(f"depth must be 4 + a multiple of {per_layer} (>= {4 + per_layer}), growth >= 1 and "
                         f"0 < compression <= 1; got depth={depth!r}, growth={growth!r}, compression={compression!r}")
    layers = (depth - 4) // per_layer
    config = DenseNetConfig((layers,) * 3, int(growth), bool(bottleneck), float(compression), "cifar",
                            2 * growth if bottleneck else 16)
    return _densenet(config, input_shape=input_shape, classes=classes, include_top=include_top, pooling=pooling,
                     classifier_activation=classifier_activation,
                     name=name or f"densenet{'_bc' if bottleneck else ''}_{depth}_k{growth}_cifar")


_PAPER = "arXiv 1608.06993"
_CIFAR = dict(input_shape=(32, 32, 3), classes=10, min_size=4)


VARIANTS = [
    Variant("densenet40_k12_cifar",
            dict(config=DenseNetConfig((12, 12, 12), 12, False, 1.0, "cifar", 16)),
            params=1.0e6, macs=266.5e6, **_CIFAR,
            source="paper Table 2 (1.0M params); Network Slimming (arXiv 1708.06519) "
                   "Table 1: 5.33e8 FLOPs, i.e. 266.5M MACs at 2 FLOPs per MAC",
            notes="L=40, k=12, no bottleneck or compression; 16-channel stem of the official "
                  "code's first version (1.02M params, 264.8M MACs)"),
    Variant("densenet_bc_100_k12_cifar",
            dict(config=DenseNetConfig((16, 16, 16), 12, True, 0.5, "cifar", 24)),
            params=0.8e6, macs=288e6, **_CIFAR, figure_source="this implementation",
            source="paper Table 2 (0.8M params); MACs counted on the official code's "
                   "structure (287.9M; the paper gives none)",
            notes="DenseNet-BC, L=100, k=12, theta=0.5, 2k = 24-channel stem"),
    Variant("densenet121", dict(config=DenseNetConfig((6, 12, 24, 16), 32, True, 0.5, "imagenet", 64)),
            params=7.98e6, macs=2.87e9, figure_source="official code",
            source="keras applications DenseNet121 (7,978,856 trainable params); 2.87G MACs",
            notes="blocks 6-12-24-16, k=32, BC with theta=0.5; min_size is the total stride"),
]
CONFIGS = {row.name: row.args["config"] for row in VARIANTS}

registry.register_variants(_densenet, VARIANTS, paper=_PAPER, input_shape=(224, 224, 3), classes=1000,
                           min_size=32)
