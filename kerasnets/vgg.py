"""VGG-16 for CIFAR-10 with BatchNorm (Simonyan & Zisserman, arXiv 1409.1556, in the CIFAR form of
Li et al., arXiv 1608.08710) and its Ghost version, Ghost-VGG-16 (Han et al., arXiv 1911.11907).

`vgg16_cifar` is the VGG-16 of GhostNet's CIFAR-10 table (15.0M params, 313M MACs), which is the
one of the filter-pruning line it compares against (Li et al.: 1.5e7 params, 3.13e8 FLOPs; code:
Eric-mingjie/rethinking-network-pruning, cifar/l1-norm-pruning/models/vgg.py): thirteen 3x3
conv-BN-ReLU units without bias (64, 64, M, 128, 128, M, 256 x3, M, 512 x3, M, 512 x3), four 2x2
max pools, average pooling of the final 2x2 map and a Linear(512)-BN-ReLU-Linear(classes)
classifier. The smaller one-Linear classifier (pytorch-cifar style) would give 14.7M params.

`ghost_vgg16_cifar` replaces every conv-BN-ReLU unit by a Ghost module with ratio s=2 and a 3x3
(d=3) cheap depthwise conv, ReLU on both halves; its primary conv keeps the replaced conv's 3x3
kernel. The first conv is replaced too, as the paper replaces all conv layers (Sec. 4.1);
keeping it plain would add 0.6M MACs (+0.4%). The classifier is kept.
"""
import tf_keras as keras

from kerasnets import blocks, registry
from kerasnets.blocks import conv_unit
from kerasnets.registry import Variant

L = keras.layers
VGG16_STAGES = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
HIDDEN_UNITS = 512


def _vgg_features(x, stages, *, unit):
    """Stages of 3x3 conv units; a 2x2 max pool between stages (none after the last)."""
    for stage, widths in enumerate(stages, start=1):
        if stage > 1:
            x = L.MaxPooling2D(2, strides=2, name=f"stage{stage - 1}_pool")(x)
        for index, filters in enumerate(widths, start=1):
            x = unit(x, filters, 3, name=f"stage{stage}_conv{index}")
    return x


def _vgg_head(x, *, include_top, pooling, classes, classifier_activation):
    """Average pool + Linear-BN-ReLU-Linear, as the CIFAR VGG of the pruning papers."""
    if not include_top:
        return blocks.classifier_head(x, include_top=False, pooling=pooling, classes=classes,
                                      classifier_activation=classifier_activation)
    x = L.GlobalAveragePooling2D(name="head_pool")(x)
    x = L.Dense(HIDDEN_UNITS, name="head_hidden_fc")(x)
    x = blocks.batch_norm(x, name="head_hidden_bn")
    x = blocks.activation(x, "relu", name="head_hidden_relu")
    return L.Dense(classes, activation=classifier_activation, name="head_fc")(x)


def _vgg(stages, *, input_shape, classes, include_top, pooling, classifier_activation, name,
         ghost=False, ratio=2, dw_kernel=3) -> keras.Model:
    """VGG of `stages`, plain or (ghost=True) with Ghost modules of ratio s, kernel d."""
    unit = conv_unit(ratio, dw_kernel) if ghost else conv_unit()
    inputs = blocks.model_input(input_shape)
    x = _vgg_features(inputs, stages, unit=unit)
    outputs = _vgg_head(x, include_top=include_top, pooling=pooling, classes=classes,
                        classifier_activation=classifier_activation)
    return keras.Model(inputs, outputs, name=name)


_CIFAR = dict(input_shape=(32, 32, 3), classes=10, min_size=16)  # four 2x2 max pools


VARIANTS = [
    Variant("vgg16_cifar", dict(stages=VGG16_STAGES), params=15.0e6, macs=313e6,
            paper="arXiv 1608.08710",
            source="GhostNet paper Table 5 (arXiv 1911.11907); Li et al. Table 1: 1.5e7, 3.13e8",
            notes="BN after every conv and after the hidden Linear(512) of the classifier"),
    Variant("ghost_vgg16_cifar", dict(stages=VGG16_STAGES, ghost=True), params=7.7e6, macs=158e6,
            paper="arXiv 1911.11907", source="paper Table 5", options=("ratio", "dw_kernel"),
            notes="all 13 convs as Ghost modules, s=2, d=3, 3x3 primary conv; "
                  "variant kwargs ratio (s), dw_kernel (d)"),
]

registry.register_variants(_vgg, VARIANTS, **_CIFAR)
