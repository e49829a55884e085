"""EffCNet / CondenseNeXt: a CondenseNet with depthwise-separable convolutions for embedded
systems (Kalgaonkar and El-Sharkawy, arXiv 2106.14102; CondenseNeXt, arXiv 2112.00698;
CondenseNeXtV2 adds the self-querying augmentation in `kerasnets.pipelines.augment`).

A dense network as CondenseNet (fully dense blocks, pooling-only transitions, 2*growth stem)
whose 1x1 learned group convolution becomes a depthwise-separable unit:

    BN-ReLU6 -> 3x3 depthwise conv (x2 channels) -> group-wise pointwise conv (learned groups)
    -> channel shuffle -> BN-ReLU6 -> 3x3 group conv (growth channels) -> concatenate

The group-wise pointwise conv is CondenseNet's learned group convolution (group-wise pruning):
`create_model("effcnet_cifar", condensing=True)` builds the training-time model,
`kerasnets.condensenet.CondensationSchedule` prunes it during `fit` and
`kerasnets.condensenet.condense` turns it into the registered test-time structure (Index +
grouped 1x1 conv + channel shuffle folded into one `IndexedGroupConv`: a dense 1x1 CONV_2D in
TFLite, no GATHER, so the whole graph runs on XNNPACK and on an Ethos-U NPU;
`kerasnets.condensenet.index_as_gather` gives the GATHER form, smaller in flash).

Configuration from the official code (priyankkalgaonkar/CondenseNeXt): CIFAR-10 with stages
4-4-4 and growth 8-8-8 (its README command), bottleneck 4, 3x3 group conv with 4 groups,
ReLU6, cardinality 8, and a depthwise stage of 2*in channels (its layer keeps
in*out - 8*floor(in*(out-k)/8) = 2*in depthwise filters for k = 2).

The papers publish relative figures only (up to 59.98% fewer FLOPs than CondenseNet, a trained
model under 3 MB), and the official code's counter does not reach its depthwise layer, so the
registered params/MACs are counted on this structure at the official configuration. Deviations
from the official layer, which prunes a full 3x3 kernel connection by connection and rebuilds it
as index -> depthwise -> a 0/1 pointwise conv: here the depthwise conv sees every input channel
twice (channel multiplier 2) and the pointwise conv is a learned group conv with G = C = 8
(the cardinality), followed by the channel shuffle; BN-ReLU6 precedes the unit (the official
layer defines them but its forward pass skips them).
"""
from __future__ import annotations

import dataclasses

import tf_keras as keras

from kerasnets import blocks, registry
from kerasnets.blocks import group_conv, learned_group_conv
from kerasnets.layers import conv_initializer
from kerasnets.registry import Variant

L = keras.layers
PAPER = "arXiv 2106.14102"


@dataclasses.dataclass(frozen=True)
class EffCNetConfig:
    stages: tuple[int, ...] = (4, 4, 4)
    growth: tuple[int, ...] = (8, 8, 8)
    bottleneck: int = 4  # the pointwise conv makes bottleneck * growth channels
    depth_multiplier: int = 2  # depthwise filters per input channel
    cardinality: int = 8  # groups (and condense factor) of the group-wise pointwise conv
    groups_3x3: int = 4


CIFAR = EffCNetConfig()


def _dense_layer(x, growth, config, *, condensing, group_lasso, name):
    new = blocks.batch_norm(x, name=f"{name}_1_bn")
    new = blocks.activation(new, "relu6", name=f"{name}_1_relu6")
    new = L.DepthwiseConv2D(3, padding="same", depth_multiplier=config.depth_multiplier,
                            use_bias=False, depthwise_initializer=conv_initializer(),
                            name=f"{name}_1_dw")(new)
    new = learned_group_conv(new, config.bottleneck * growth, groups=config.cardinality,
                             condense_factor=config.cardinality, condensing=condensing,
                             group_lasso=group_lasso, name=f"{name}_1_lgc")
    new = blocks.batch_norm(new, name=f"{name}_2_bn")
    new = blocks.activation(new, "relu6", name=f"{name}_2_relu6")
    new = group_conv(new, growth, 3, groups=config.groups_3x3, condensing=condensing, name=f"{name}_2_conv")
    return L.Concatenate(name=f"{name}_concat")([x, new])


def build_effcnet(config: EffCNetConfig = CIFAR, *, input_shape, classes, include_top, pooling,
                  classifier_activation, name, condensing=False, group_lasso=0.0) -> keras.Model:
    """EffCNet from a config: test-time structure, or with `condensing=True` the training-time one."""
    inputs = blocks.model_input(input_shape)
    x = L.Conv2D(2 * config.growth[0], 3, padding="same", use_bias=False,
                 kernel_initializer=conv_initializer(), name="stem_conv")(inputs)
    last = len(config.stages)
    for block, (layers, growth) in enumerate(zip(config.stages, config.growth), start=1):
        for i in range(1, layers + 1):
            x = _dense_layer(x, growth, config, condensing=condensing, group_lasso=group_lasso,
                             name=f"block{block}_layer{i}")
        if block < last:
            x = L.AveragePooling2D(2, strides=2, name=f"transition{block}_pool")(x)
    x = blocks.batch_norm(x, name="final_bn")
    x = blocks.activation(x, "relu6", name="final_relu6")
    x = blocks.classifier_head(x, include_top=include_top, pooling=pooling, classes=classes,
                               classifier_activation=classifier_activation)
    return keras.Model(inputs, x, name=name)


# The papers give no absolute size: the figures are counted on this structure.
_SOURCE = ("papers give no absolute size; counted on the official code's CIFAR-10 configuration "
           "(priyankkalgaonkar/CondenseNeXt: stages 4-4-4, growth 8-8-8, bottleneck 4, "
           "group-3x3 4, cardinality 8, k=2) as built here; the official converted layer, with a "
           "dense 0/1 pointwise conv and no BN before it, would count 68.5k params and 19.9M MACs")

VARIANTS = [  # CondenseNeXt is the name of the same network in arXiv 2112.00698
    Variant("effcnet_cifar", {}, params=29.6e3, macs=8.73e6),
    Variant("condensenext_cifar", {}, params=29.6e3, macs=8.73e6),
]

registry.register_variants(
    build_effcnet, VARIANTS, paper=PAPER, input_shape=(32, 32, 3), classes=10, min_size=4,
    source=_SOURCE, figure_source="this implementation", options=("condensing", "group_lasso"),
    notes="test-time structure; the float .keras file of the trained model stays far under 3 MB")
