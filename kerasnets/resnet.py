"""ResNets for CIFAR-10 (He et al., CVPR 2016, arXiv 1512.03385), their Ghost versions (Han et
al., CVPR 2020, arXiv 1911.11907) and the MLPerf Tiny ResNet-8.

CIFAR ResNets (`resnet20_cifar`, `resnet56_cifar`): a 3x3 conv stem with 16 channels, then three
stages of n = (depth - 2) / 6 basic blocks with 16/32/64 channels, stride 2 at the first block of
stages 2 and 3, global average pooling and a 10-way classifier. The paper uses parameter-free
option A shortcuts (subsample, zero-pad the new channels); here the two shortcuts that change
shape are option B projections (1x1 conv + BN), as in chenyaofo/pytorch-cifar-models (whose
ResNet-20/56 this matches layer for layer) and the keras.io CIFAR-10 ResNet: zero-padding
channels has no Keras layer (it would need a Lambda or a custom layer with its own QAT config),
while a projection is one int8 CONV_2D. Option B adds 2.8k parameters (+1.0% for ResNet-20,
+0.3% for ResNet-56) and 0.26M MACs; both options are within 1% of the paper's counts.

Ghost-ResNet-56 (`ghost_resnet56_cifar`): every conv-BN(-ReLU) unit of ResNet-56 becomes a
Ghost module with ratio s=2 and a d x d = 3x3 cheap depthwise conv; the primary conv keeps the
replaced conv's 3x3 kernel and stride, and both halves get the ReLU only where the replaced unit
had one (GhostNet's `relu` flag). The stem is replaced too, as the paper replaces all conv layers
(Sec. 4.1); keeping it plain would change the counts by < 0.3%. The projection shortcuts stay
plain 1x1 convs: they stand in for the paper's parameter-free shortcuts, so there is no conv of
the paper's net to replace there.

ResNet-8 (`resnet8`) follows the MLPerf Tiny reference model (mlcommons/tiny,
benchmark/training/image_classification/keras_model.py, `resnet_v1_eembc` with 16 filters):
convs with bias, He-normal init and L2 1e-4 on their kernels, Keras-default BatchNorm, a 1x1
conv shortcut without BN on the stride-2 stacks and a He-normal softmax classifier.
"""
import tf_keras as keras

from kerasnets import blocks, registry
from kerasnets.blocks import conv_unit
from kerasnets.registry import Variant

L = keras.layers
CIFAR_STAGE_FILTERS = (16, 32, 64)
MLPERF_WEIGHT_DECAY = 1e-4


# --- CIFAR ResNets (He et al.) and Ghost-ResNet ---------------------------------------------

def _basic_block(x, filters, *, strides, unit, name):
    """Two 3x3 units, the second linear, added to the (projected) input, then ReLU."""
    y = unit(x, filters, 3, strides=strides, act="relu", name=f"{name}_conv1")
    y = unit(y, filters, 3, act=None, name=f"{name}_conv2")
    if strides != 1 or x.shape[-1] != filters:
        x = blocks.conv_bn(x, filters, 1, strides=strides, act=None, name=f"{name}_shortcut")
    x = L.Add(name=f"{name}_add")([x, y])
    return blocks.activation(x, "relu", name=f"{name}_out")


def stage_filters(width: float, multiple: int = 4) -> tuple[int, ...]:
    """The CIFAR ResNet's 16/32/64 stage widths scaled by `width`, rounded to `multiple`."""
    return tuple(max(multiple, int(round(f * width / multiple)) * multiple) for f in CIFAR_STAGE_FILTERS)


def cifar_resnet(depth=None, *, input_shape=(32, 32, 3), classes=10, include_top=True, pooling=None,
                 classifier_activation="softmax", name=None, width=1.0, ghost=False, ratio=2,
                 dw_kernel=3, stage_widths=None, stage_blocks=None) -> keras.Model:
    """CIFAR ResNet of `depth` (6n + 2) with stage widths 16/32/64 x `width`, plain or (ghost=True)
    with Ghost modules of ratio s, kernel d: the family's knobs, for searches over its sizes.
    `stage_widths` and `stage_blocks` (three each) set the stages' widths and block counts one by one
    instead (then `depth` may be left out: it is 2 + 2 x the blocks); they let a search move parameters
    between resolutions, e.g. more blocks at 32x32 and a thinner 8x8 stage."""
    unit = conv_unit(ratio, dw_kernel) if ghost else conv_unit()
    blocks_per_stage = _blocks_per_stage(depth, stage_blocks)
    depth = 2 + 2 * sum(blocks_per_stage)
    if not 0 < width <= 4:
        raise ValueError(f"width must be in (0, 4], got {width!r}")
    if stage_widths is not None and width != 1.0:
        raise ValueError(f"pass width ({width!r}) or stage_widths ({stage_widths!r}), not both")
    filters_per_stage = (stage_filters(width) if stage_widths is None
                         else _three_positive("stage_widths", stage_widths))
    inputs = blocks.model_input(input_shape)
    x = unit(inputs, filters_per_stage[0], 3, name="stem")
    for stage, (filters, count) in enumerate(zip(filters_per_stage, blocks_per_stage), start=1):
        for block in range(1, count + 1):
            strides = 2 if stage > 1 and block == 1 else 1
            x = _basic_block(x, filters, strides=strides, unit=unit, name=f"stage{stage}_block{block}")
    outputs = blocks.classifier_head(x, include_top=include_top, pooling=pooling, classes=classes,
                                     classifier_activation=classifier_activation)
    return keras.Model(inputs, outputs, name=name or f"{'ghost_' if ghost else ''}resnet{depth}_cifar")


def _three_positive(argument, values) -> tuple[int, ...]:
    values = tuple(values)
    if len(values) != 3 or not all(isinstance(v, int) and v >= 1 for v in values):
        raise ValueError(f"{argument} must be three positive integers (one per stage), got {values!r}")
    return values


def _blocks_per_stage(depth, stage_blocks) -> tuple[int, ...]:
    """From `depth` (6n + 2: n per stage) or from `stage_blocks`, which `depth` must then match."""
    if stage_blocks is not None:
        counts = _three_positive("stage_blocks", stage_blocks)
        if depth is not None and depth != 2 + 2 * sum(counts):
            raise ValueError(f"depth {depth!r} does not match stage_blocks {counts!r} (depth = 2 + 2 x their "
                             f"sum = {2 + 2 * sum(counts)}); pass one of them")
        return counts
    if not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
        raise ValueError(f"CIFAR ResNet depth must be 6n + 2 (8, 14, 20, ...), got {depth!r}; or pass "
                         "stage_blocks, e.g. stage_blocks=(2, 2, 1)")
    return ((depth - 2) // 6,) * 3


_CIFAR = dict(input_shape=(32, 32, 3), classes=10, min_size=4)
_SHORTCUT_NOTE = "option B (1x1 conv + BN) projection shortcuts where the shape changes; the paper uses option A"


VARIANTS = [
    Variant("resnet20_cifar", dict(depth=20), params=0.27e6, macs=41e6, notes=_SHORTCUT_NOTE,
            source="paper Table 6 (params); MACs are not in the paper: 41M as commonly reported"),
    Variant("resnet56_cifar", dict(depth=56), params=0.85e6, macs=125e6, notes=_SHORTCUT_NOTE,
            source="paper Table 6 (params); GhostNet paper Table 5 (arXiv 1911.11907) for MACs"),
    Variant("ghost_resnet56_cifar", dict(depth=56, ghost=True), params=0.43e6, macs=63e6,
            paper="arXiv 1911.11907", source="paper Table 5", options=("ratio", "dw_kernel"),
            notes="every conv-BN unit of ResNet-56 (stem included) as a Ghost module, s=2, d=3, "
                  "3x3 primary conv; " + _SHORTCUT_NOTE + "; variant kwargs ratio (s), dw_kernel (d)"),
]

# Found by `kerasnets frontier` within MLPerf Tiny ResNet-8's int8 size and TFLite Micro arena
# (results/frontier-screen.csv, -rank.csv, frontier.csv): deeper and thinner than ResNet-8.
_FRONTIER_SOURCE = "this implementation: kerasnets frontier search (results/frontier.csv)"
FRONTIER_VARIANTS = [
    Variant("resnet14_062_cifar", dict(depth=14, width=0.625), params=67_210, macs=9_032_080,
            source=_FRONTIER_SOURCE, figure_source="this implementation",
            notes="CIFAR ResNet-14, stage widths 8/20/40 (16/32/64 x 0.625, multiples of 4)"),
]

registry.register_variants(cifar_resnet, VARIANTS + FRONTIER_VARIANTS, paper="arXiv 1512.03385", **_CIFAR)


# --- MLPerf Tiny ResNet-8 --------------------------------------------------------------------

def _mlperf_conv(x, filters, kernel, *, strides=1, name):
    """Conv2D as the reference declares it: with bias, He-normal, L2 weight decay on the kernel."""
    return L.Conv2D(filters, kernel, strides=strides, padding="same", kernel_initializer="he_normal",
                    kernel_regularizer=keras.regularizers.L2(MLPERF_WEIGHT_DECAY), name=name)(x)


def _mlperf_conv_bn(x, filters, kernel, *, strides=1, act="relu", name):
    x = _mlperf_conv(x, filters, kernel, strides=strides, name=f"{name}_conv")
    x = L.BatchNormalization(name=f"{name}_bn")(x)  # Keras defaults, as the reference
    return blocks.activation(x, act, name=f"{name}_{act}")


def _mlperf_stack(x, filters, *, strides, name):
    """Residual stack of the reference: two 3x3 convs; a 1x1 conv (no BN) shortcut on stride 2."""
    y = _mlperf_conv_bn(x, filters, 3, strides=strides, name=f"{name}_conv1")
    y = _mlperf_conv_bn(y, filters, 3, act=None, name=f"{name}_conv2")
    if strides != 1 or x.shape[-1] != filters:
        x = _mlperf_conv(x, filters, 1, strides=strides, name=f"{name}_shortcut")
    x = L.Add(name=f"{name}_add")([x, y])
    return blocks.activation(x, "relu", name=f"{name}_out")


def _mlperf_head(x, *, include_top, pooling, classes, classifier_activation):
    """Average pool over the whole map + He-normal Dense (the reference pools 8x8 at 32x32)."""
    if not include_top:
        return blocks.classifier_head(x, include_top=False, pooling=pooling, classes=classes,
                                      classifier_activation=classifier_activation)
    x = L.GlobalAveragePooling2D(name="head_pool")(x)
    return L.Dense(classes, activation=classifier_activation, kernel_initializer="he_normal",
                   name="head_fc")(x)


def _resnet8(*, input_shape, classes, include_top, pooling, classifier_activation, name):
    inputs = blocks.model_input(input_shape)
    x = _mlperf_conv_bn(inputs, 16, 3, name="stem")
    x = _mlperf_stack(x, 16, strides=1, name="stack1")
    x = _mlperf_stack(x, 32, strides=2, name="stack2")
    x = _mlperf_stack(x, 64, strides=2, name="stack3")
    outputs = _mlperf_head(x, include_top=include_top, pooling=pooling, classes=classes,
                           classifier_activation=classifier_activation)
    return keras.Model(inputs, outputs, name=name)


MLPERF_VARIANTS = [
    Variant("resnet8", {}, params=78e3, macs=12.5e6,
            notes="resnet_v1_eembc with 16/32/64 filters; convs with bias and L2 1e-4, "
                  "Keras-default BN"),
]

registry.register_variants(
    _resnet8, MLPERF_VARIANTS, paper="MLPerf Tiny (arXiv 2106.07597)", **_CIFAR,
    source="official code: mlcommons/tiny benchmark/training/image_classification/keras_model.py",
    figure_source="official code")
