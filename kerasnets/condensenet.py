"""CondenseNet: An Efficient DenseNet using Learned Group Convolutions (Huang et al., CVPR 2018,
arXiv 1711.09224).

Two forms of every variant, as in the paper's Figure 1 and the official code (ShichenLiu/CondenseNet):

- The *condensed* (test-time) model is what `create_model(name)` returns and what the registered
  params/MACs describe (the paper's tables count the condensed network): each learned group
  convolution is the paper's Index (the input channels every group kept), grouped 1x1 conv and
  Permute back to the training-time channel order, folded into one `IndexedGroupConv` that holds
  the grouped kernel and runs as a dense 1x1 conv with zeros where connections were dropped: one
  CONV_2D in TFLite, no GATHER (which neither XNNPACK nor an Ethos-U NPU runs) and no TRANSPOSE.
  The classifier (`IndexedDense`) reads the half of the pooled features it kept, the same way.
  Built from scratch its indices are placeholders; it gets learned ones, with weights, from
  `condense`.
- The *training-time* model (`create_model(name, condensing=True)` or `condensenet_train(name)`)
  has full 1x1 `LearnedGroupConv` layers whose masks drop input connections group by group:
  `CondensationSchedule` (a Keras callback) runs the C-1 condensing stages over the first half of
  training, at the progress points of the official code, each dropping in/C inputs per group with
  the smallest L1 weight; an optional group-lasso penalty (`group_lasso`, official: 0 on CIFAR,
  1e-5 on ImageNet) pushes whole groups of weights towards zero before each drop.
  `condense(model)` then rebuilds that trained model into the condensed form, exactly: the two
  give the same outputs (up to float rounding).

Where this differs from the official code:
- The official converter drops the classifier's weaker half of the input features after training
  (CondensingLinear). Here the classifier (`CondensingDense`) drops it at the end of the
  condensing stages, so the second half of training adapts to it and the condensed model equals
  the trained one instead of approximating it. Sizes are the same.
- The official condensed layer applies BatchNorm-ReLU after the Index; here they stay before it
  (they commute with a channel selection). With G = C, as in all variants here, the selected
  channels are as many as the input channels, so parameters and MACs are unchanged.
- Stride-2 convolutions use TF "same" padding (an extra row/column at the bottom/right) instead
  of PyTorch's symmetric padding: same shapes, parameters and MACs.
- The paper counts multiply-accumulates as FLOPs, but its counter (the official utils.measure_model)
  also adds one operation per ReLU and pooled element. Its rules on the condensed structure here
  (`official_flops`) give the published 28.64M / 65.81M / 529.3M / 274.2M exactly; the registered
  MACs are their conv/linear part, which is what `kerasnets.profile` counts.

Training: `model.fit(..., callbacks=[CondensationSchedule(epochs)])` on the training-time model,
then `condense(model)`; `finish_condensation(model)` runs any stages a shortened run did not reach.
`index_as_gather(model)` (or `condense(model, index="gather")`) gives the paper's own test-time form
of a condensed model, Index as a GATHER op + grouped 1x1 conv + Permute: the same outputs in a
smaller int8 file (each condensed kernel stored once, not G times with zeros), for a CPU where flash
is the budget (TFLite Micro); the folded form is the one every fast path and an NPU run whole.
Custom layers (IndexedGroupConv, IndexedDense, LearnedGroupConv, CondensingDense,
BlockDiagonalConv2D; ChannelGather, the Index as a GATHER op) live in
`kerasnets.layers` (and the learned group conv blocks in `kerasnets.blocks`, shared with EffCNet);
they are serialisable and declare their QAT spec; QAT wraps the training-time model too and keeps
dropped connections dropped. This module re-exports them under their old names.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf
import tf_keras as keras

from kerasnets import blocks, registry
from kerasnets.blocks import (condensed_group_conv, group_conv,  # noqa: F401  (family API)
                              learned_group_conv, placeholder_indices)
from kerasnets.layers import (BlockDiagonalConv2D, ChannelGather,  # noqa: F401  (family API)
                              CondensingDense, IndexedDense, IndexedGroupConv, LearnedGroupConv,
                              block_diagonal, conv_initializer)
from kerasnets.profile import profile
from kerasnets.registry import Variant

L = keras.layers
PAPER = "arXiv 1711.09224"


def condensing_stage(progress: float, condense_factor: int) -> int:
    """Condensing stage (0 .. C-1) reached at a training progress in [0, 1]: C-1 equal steps over
    the first half of training, as in the official LearnedGroupConv."""
    final = condense_factor - 1
    return final if final == 0 else min(final, int(progress * 2 * final))


# ---------------------------------------------------------------------------------------------
# training: the condensing schedule


def _unwrapped(layer):
    """The layer itself, or the one a QAT/pruning wrapper holds."""
    return getattr(layer, "layer", layer)


INDEXED_LAYERS = (IndexedGroupConv, IndexedDense)  # a condensed model's folded Index layers


def condensing_layers(model) -> list:
    """The LearnedGroupConv and CondensingDense layers of a model (inside QAT wrappers too)."""
    found = [_unwrapped(layer) for layer in model.layers]
    return [layer for layer in found if isinstance(layer, (LearnedGroupConv, CondensingDense))]


def indexed_layers(model) -> list:
    """The IndexedGroupConv and IndexedDense layers of a condensed model (inside QAT wrappers too)."""
    found = [_unwrapped(layer) for layer in model.layers]
    return [layer for layer in found if isinstance(layer, INDEXED_LAYERS)]


def condense_to_progress(model, progress: float) -> None:
    """Bring every condensing layer to the stage of a training progress in [0, 1]; the classifier
    condenses with the last stage (progress 0.5)."""
    for layer in condensing_layers(model):
        if isinstance(layer, LearnedGroupConv):
            layer.advance_to(condensing_stage(progress, layer.condense_factor))
        elif progress >= 0.5:
            layer.condense()


def finish_condensation(model) -> None:
    """Run all remaining condensing stages now (as if half of training had passed)."""
    condense_to_progress(model, 1.0)


class CondensationSchedule(keras.callbacks.Callback):
    """Advances the learned group convolutions through their condensing stages during `fit`.

    Progress is (epoch * steps + step) / (epochs * steps), checked before every batch as in the
    official training loop; `epochs` is the total the run will train (with its learning-rate
    schedule), `steps_per_epoch` defaults to the one `fit` reports.
    """

    def __init__(self, epochs: int, steps_per_epoch: int | None = None):
        super().__init__()
        if int(epochs) < 1:
            raise ValueError(f"epochs must be >= 1, got {epochs!r}")
        self.epochs = int(epochs)
        self.steps_per_epoch = steps_per_epoch
        self._epoch = 0

    def _steps(self) -> int:
        steps = self.steps_per_epoch or (self.params or {}).get("steps")
        if not steps:
            raise ValueError("CondensationSchedule needs steps_per_epoch: the dataset's length is unknown")
        return int(steps)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        progress = (self._epoch * self._steps() + batch) / (self.epochs * self._steps())
        condense_to_progress(self.model, min(progress, 1.0))


# ---------------------------------------------------------------------------------------------
# condensed form and the condense step


def condensed_kernel(layer: LearnedGroupConv) -> tuple[list[int], np.ndarray]:
    """Index list and grouped (1, 1, in/C, filters) kernel equal to a fully condensed layer.

    Condensed output j = g * (filters / G) + t is training-time output g + t * G: IndexedGroupConv
    puts it back in place.
    """
    inputs = layer.group_inputs()
    per_group = layer.kernel.shape[2] // layer.condense_factor
    if any(len(kept) != per_group for kept in inputs):
        raise ValueError(f"{layer.name}: groups read {[len(k) for k in inputs]} inputs, expected "
                         f"{per_group} each after condensing")
    kernel = layer.kernel_variable.numpy()[0, 0]
    outputs_per_group = layer.filters // layer.groups
    grouped = np.empty((1, 1, per_group, layer.filters), np.float32)
    for g, kept in enumerate(inputs):
        originals = g + np.arange(outputs_per_group) * layer.groups
        grouped[0, 0, :, g * outputs_per_group:(g + 1) * outputs_per_group] = kernel[np.ix_(kept, originals)]
    return [i for kept in inputs for i in kept], grouped


def _condensed_lgc(layer, x, assignments):
    indices, kernel = condensed_kernel(layer)
    assignments[f"{layer.name}_conv"] = [kernel]
    return condensed_group_conv(x, layer.filters, groups=layer.groups, indices=indices, name=layer.name)


def _condensed_dense(layer, x, assignments):
    kept = layer.kept_features()
    dense = IndexedDense(layer.units, indices=kept, activation=layer.activation, use_bias=layer.use_bias,
                         name=layer.name)
    weights = [layer.kernel_variable.numpy()[kept]] + ([layer.bias.numpy()] if layer.use_bias else [])
    assignments[layer.name] = weights
    return dense(x)


def _copied_layer(layer, x, assignments):
    kind = L.Conv2D if isinstance(layer, BlockDiagonalConv2D) else layer.__class__
    clone = kind.from_config(layer.get_config())
    assignments[layer.name] = layer.get_weights()
    return clone(x)


def _gathered_layer(layer, x, assignments):
    """An IndexedGroupConv as the paper's Index (GATHER), grouped 1x1 conv and Permute; an
    IndexedDense as Index and Dense. Same weights: the compact kernel is the grouped conv's."""
    if not isinstance(layer, INDEXED_LAYERS):
        return _copied_layer(layer, x, assignments)
    config = {k: v for k, v in layer.get_config().items() if k != "indices"}
    assignments[layer.name] = layer.get_weights()
    x = ChannelGather(layer.indices, name=f"{layer.name}_index")(x)
    if isinstance(layer, IndexedDense):
        return L.Dense.from_config(config)(x)
    x = L.Conv2D.from_config(config)(x)
    return blocks.channel_shuffle(x, layer.groups, name=f"{layer.name}_permute") if layer.groups > 1 else x


def _condensed_layer(layer, x, assignments):
    if isinstance(layer, LearnedGroupConv):
        return _condensed_lgc(layer, x, assignments)
    if isinstance(layer, CondensingDense):
        return _condensed_dense(layer, x, assignments)
    return _copied_layer(layer, x, assignments)


def _rebuilt(model: keras.Model, rebuild_layer) -> keras.Model:
    """`model` with every layer rebuilt by `rebuild_layer(layer, inputs, assignments)`, which
    returns the layer's new output and records the new layers' weights by name."""
    new = {}  # id(original tensor) -> rebuilt tensor
    assignments = {}  # layer name -> weights to set once the model exists
    inputs = []
    for layer in model.layers:
        if isinstance(layer, L.InputLayer):
            tensor = L.Input(shape=layer.output.shape[1:], name=layer.name)
            inputs.append(tensor)
            new[id(layer.output)] = tensor
            continue
        x = tf.nest.map_structure(lambda t: new[id(t)], layer.input)
        new[id(layer.output)] = rebuild_layer(layer, x, assignments)
    rebuilt = keras.Model(inputs, [new[id(t)] for t in model.outputs], name=model.name)
    for name, weights in assignments.items():
        rebuilt.get_layer(name).set_weights(weights)
    return rebuilt


def _check_functional(model, caller):
    if not isinstance(model, keras.Model) or not getattr(model, "_is_graph_network", False):
        raise TypeError(f"{caller}() needs a functional tf_keras Model, got {type(model).__name__}")


def _check_condensed(model):
    pending = [layer.name for layer in condensing_layers(model) if not layer.is_condensed]
    if pending:
        raise ValueError(f"condense() needs a fully condensed training-time model; "
                         f"{', '.join(pending[:5])}{' ...' if len(pending) > 5 else ''} have not "
                         "reached their last condensing stage: train with CondensationSchedule "
                         "or call finish_condensation(model) first")


INDEX_FORMS = ("folded", "gather")


def condense(model: keras.Model, *, index: str = "folded") -> keras.Model:
    """Rebuild a trained training-time model as the condensed test-time model (builtin ops only).

    Every LearnedGroupConv becomes an IndexedGroupConv (Index + grouped 1x1 conv + Permute), a
    CondensingDense an IndexedDense (Index + Dense) and a BlockDiagonalConv2D a grouped Conv2D; all
    other layers are copied with their weights. The result has the registered structure of its
    variant and the same outputs as `model`. `index="gather"` returns `index_as_gather` of it.
    """
    _check_functional(model, "condense")
    if index not in INDEX_FORMS:
        raise ValueError(f"`index` must be one of {INDEX_FORMS}, got {index!r}")
    _check_condensed(model)
    condensed = _rebuilt(model, _condensed_layer)
    return index_as_gather(condensed) if index == "gather" else condensed


def index_as_gather(model: keras.Model) -> keras.Model:
    """The condensed model with each Index as a GATHER op: the smaller int8 file where flash is the
    budget and a CPU runs the model (TFLite Micro, LiteRT's builtin kernels).

    Every IndexedGroupConv becomes the paper's ChannelGather + grouped 1x1 Conv2D + Permute (a channel
    shuffle through tensors of rank <= 4) and every IndexedDense ChannelGather + Dense, with the same
    weights and outputs. The folded form runs the 1x1 conv dense, so its int8 file stores each
    learned group conv's kernel `groups` times over (zeros where connections were dropped); this form
    stores it once, at the cost of a GATHER that leaves XNNPACK's fast path and an Ethos-U's NPU, a
    TRANSPOSE per layer and the gathered copy of the features in the arena. Quantise (`quantize_model`)
    after this call: a QAT-wrapped model is refused.
    """
    _check_functional(model, "index_as_gather")
    wrapped = [layer.name for layer in model.layers if isinstance(layer, keras.layers.Wrapper)]
    if wrapped:
        raise ValueError(f"index_as_gather(model) needs the float model; `model` has QAT or pruning wrappers "
                         f"({', '.join(wrapped[:3])}{' ...' if len(wrapped) > 3 else ''}): call it on the float "
                         "model (strip_pruning first) and quantise the result")
    if not indexed_layers(model):
        raise ValueError(f"index_as_gather(model): {model.name!r} has no IndexedGroupConv or IndexedDense "
                         "layer (a condensed CondenseNet or EffCNet has them; a training-time model: condense it)")
    return _rebuilt(model, _gathered_layer)


# ---------------------------------------------------------------------------------------------
# the network


@dataclasses.dataclass(frozen=True)
class CondenseNetConfig:
    stages: tuple[int, ...]  # dense layers per block
    growth: tuple[int, ...]  # growth rate per block (increasing: the paper's Sec. 4.2)
    groups: int = 4  # G of the learned 1x1 and of the 3x3 group convolutions
    condense_factor: int = 4  # C
    bottleneck: int = 4  # the 1x1 conv makes bottleneck * growth channels
    stem_stride: int = 1  # 2 on ImageNet
    classifier_keep: float = 0.5  # fraction of pooled features the condensed classifier reads


def _dense_layer(x, growth, config, *, condensing, group_lasso, name):
    """BN-ReLU-learned group 1x1 conv to bottleneck*growth, BN-ReLU-3x3 group conv to growth,
    concatenated to the input (full dense connectivity)."""
    new = blocks.batch_norm(x, name=f"{name}_1_bn")
    new = blocks.activation(new, "relu", name=f"{name}_1_relu")
    new = learned_group_conv(new, config.bottleneck * growth, groups=config.groups,
                             condense_factor=config.condense_factor, condensing=condensing,
                             group_lasso=group_lasso, name=f"{name}_1_lgc")
    new = blocks.batch_norm(new, name=f"{name}_2_bn")
    new = blocks.activation(new, "relu", name=f"{name}_2_relu")
    new = group_conv(new, growth, 3, groups=config.groups, condensing=condensing, name=f"{name}_2_conv")
    return L.Concatenate(name=f"{name}_concat")([x, new])


def _classifier(x, classes, keep, *, condensing, classifier_activation):
    """Pooled features -> Dense on the kept fraction of them (condensed) or CondensingDense."""
    x = L.GlobalAveragePooling2D(name="head_pool")(x)
    if condensing:
        return CondensingDense(classes, keep=keep, activation=classifier_activation, name="head_fc")(x)
    kept = list(range(max(1, int(x.shape[-1] * keep))))
    return IndexedDense(classes, indices=kept, activation=classifier_activation, name="head_fc")(x)


def build_condensenet(config: CondenseNetConfig, *, input_shape, classes, include_top, pooling,
                      classifier_activation, name, condensing=False, group_lasso=0.0) -> keras.Model:
    """CondenseNet from a config: condensed (test-time) structure, or with `condensing=True` the
    training-time one (LearnedGroupConv + CondensingDense) that `condense` turns into it."""
    inputs = blocks.model_input(input_shape)
    x = L.Conv2D(2 * config.growth[0], 3, strides=config.stem_stride, padding="same", use_bias=False,
                 kernel_initializer=conv_initializer(), name="stem_conv")(inputs)
    last = len(config.stages)
    for block, (layers, growth) in enumerate(zip(config.stages, config.growth), start=1):
        for i in range(1, layers + 1):
            x = _dense_layer(x, growth, config, condensing=condensing, group_lasso=group_lasso,
                             name=f"block{block}_layer{i}")
        if block < last:  # transitions only pool: the 1x1 convs already select features
            x = L.AveragePooling2D(2, strides=2, name=f"transition{block}_pool")(x)
    x = blocks.batch_norm(x, name="final_bn")
    x = blocks.activation(x, "relu", name="final_relu")
    if include_top:
        x = _classifier(x, classes, config.classifier_keep, condensing=condensing,
                        classifier_activation=classifier_activation)
    else:
        x = blocks.classifier_head(x, include_top=False, pooling=pooling, classes=classes,
                                   classifier_activation=classifier_activation)
    return keras.Model(inputs, x, name=name)


def condensenet_train(name: str, **kwargs) -> keras.Model:
    """Training-time model of a registered CondenseNet (`create_model(name, condensing=True)`)."""
    from kerasnets.registry import create_model

    return create_model(name, condensing=True, **kwargs)


_OFFICIAL = "ShichenLiu/CondenseNet"


def official_flops(model: keras.Model) -> int:
    """FLOPs of a condensed CondenseNet as its paper counts them (the official
    utils.measure_model): the conv/linear multiply-adds `kerasnets.profile` counts, plus one per
    element a ReLU or an average pool reads, plus the classifier's biases. On the registered
    variants this gives the published 28.6M / 65.8M / 529M / 274M (`tests/test_condensenet.py`)."""
    def read(layer):
        return int(np.prod(layer.input_shape[1:]))

    counted = (keras.layers.ReLU, keras.layers.AveragePooling2D, keras.layers.GlobalAveragePooling2D)
    elements = sum(read(layer) for layer in model.layers if isinstance(layer, counted))
    biases = sum(int(np.prod(layer.bias.shape)) for layer in model.layers
                 if isinstance(layer, keras.layers.Dense) and layer.bias is not None)
    return int(profile(model)["macs"]) + elements + biases


def _source(params, flops, recount, macs):
    """Where a variant's figures come from: the published FLOPs include the ReLU and pooling
    operations the official counter adds, so the registered MACs are the conv/linear part."""
    return (f"paper and {_OFFICIAL} README: {params} params, {flops} FLOPs of the condensed model; "
            f"the official counter (utils.measure_model: conv/linear multiply-adds + 1 per ReLU and "
            f"pooled element) gives {recount} on this structure, of which {macs} are conv/linear MACs")


_OPTIONS = ("condensing", "group_lasso")  # variant arguments of build_condensenet
_CIFAR = dict(input_shape=(32, 32, 3), classes=10, min_size=4)

VARIANTS = [
    Variant("condensenet50_cifar", dict(config=CondenseNetConfig((8, 8, 8), (8, 16, 32))),
            params=0.22e6, macs=27.18e6, **_CIFAR, source=_source("0.22M", "28.6M", "28.64M", "27.18M"),
            notes=f"stages 8-8-8, growth 8-16-32, G=C=4, bottleneck 4 ({_OFFICIAL} CIFAR recipe at "
                  "depth 50)"),
    Variant("condensenet86_cifar", dict(config=CondenseNetConfig((14, 14, 14), (8, 16, 32))),
            params=0.52e6, macs=62.38e6, **_CIFAR, source=_source("0.52M", "65.8M", "65.81M", "62.38M"),
            notes=f"stages 14-14-14, growth 8-16-32, G=C=4, bottleneck 4 ({_OFFICIAL} script.sh)"),
    Variant("condensenet74_g4", dict(config=CondenseNetConfig(
                (4, 6, 8, 10, 8), (8, 16, 32, 64, 128), stem_stride=2)),
            params=4.8e6, macs=516.6e6, source=_source("4.8M", "529M", "529.3M", "516.6M"),
            notes=f"stages 4-6-8-10-8, growth 8-16-32-64-128, G=C=4 ({_OFFICIAL} script.sh)"),
    Variant("condensenet74_g8", dict(config=CondenseNetConfig(
                (4, 6, 8, 10, 8), (8, 16, 32, 64, 128), groups=8, condense_factor=8, stem_stride=2)),
            params=2.9e6, macs=261.5e6, source=_source("2.9M", "274M", "274.2M", "261.5M"),
            notes=f"stages 4-6-8-10-8, growth 8-16-32-64-128, G=C=8 ({_OFFICIAL} README)"),
]
CONFIGS = {row.name: row.args["config"] for row in VARIANTS}

# The MACs are this structure's conv/linear part of the official counter's total (see _source).
registry.register_variants(build_condensenet, VARIANTS, paper=PAPER, input_shape=(224, 224, 3),
                           classes=1000, min_size=32, figure_source="this implementation",
                           options=_OPTIONS)
