"""CondenseNet: An Efficient DenseNet using Learned Group Convolutions (Huang et al., CVPR 2018,
arXiv 1711.09224).

Two forms of every variant, as in the paper's Figure 1 and the official code (ShichenLiu/CondenseNet):

- The *condensed* (test-time) model is what `create_model(name)` returns and what the registered
  params/MACs describe (the paper's tables count the condensed network): each learned group
  convolution is an Index layer (`ChannelGather`, one GATHER op) that picks the input channels
  every group kept, a grouped 1x1 Conv2D (a native CONV_2D) and a Permute back to the
  training-time channel order (`blocks.channel_shuffle`, tensors of rank <= 4). The classifier reads
  the half of the pooled features it kept. Built from scratch its indices are placeholders; it gets
  learned ones, with weights, from `condense`.
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
  give the published 28.64M / 65.81M / 529.3M / 274.2M exactly; the registered MACs are their
  conv/linear part, which is what `kerasnets.profile` counts.

Training: `model.fit(..., callbacks=[CondensationSchedule(epochs)])` on the training-time model,
then `condense(model)`; `finish_condensation(model)` runs any stages a shortened run did not reach.
Custom layers (ChannelGather, LearnedGroupConv, CondensingDense) are serialisable and declare
their QAT spec; QAT wraps the training-time model too and keeps dropped connections dropped.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf
import tf_keras as keras

from kerasnets import blocks
from kerasnets.registry import register_model

L = keras.layers
_PACKAGE = "kerasnets"
PAPER = "arXiv 1711.09224"


def conv_initializer():
    """He-normal over fan-out, the official code's normal(0, sqrt(2 / (k * k * out)))."""
    return keras.initializers.VarianceScaling(2.0, mode="fan_out", distribution="untruncated_normal")


# ---------------------------------------------------------------------------------------------
# layers


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ChannelGather(keras.layers.Layer):
    """Channels `indices` of an NHWC (or N, C) tensor, in that order: one GATHER op on the last axis
    (the paper's Index layer). Repeats are allowed: two groups may keep the same input."""

    qat_spec = ((), False)  # moves values only: keeps its input's scale
    prune_role = "fixed"  # selects channels by index
    tflite_ops = ("GATHER",)

    def __init__(self, indices, **kwargs):
        super().__init__(**kwargs)
        self.indices = [int(i) for i in indices]
        if not self.indices or min(self.indices) < 0:
            raise ValueError(f"ChannelGather needs a non-empty list of indices >= 0, got {indices!r}")

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is not None and max(self.indices) >= channels:
            raise ValueError(f"ChannelGather index {max(self.indices)} is out of range for the "
                             f"{channels} input channels of layer {self.name!r}")
        super().build(input_shape)

    def call(self, inputs):
        return tf.gather(inputs, self.indices, axis=-1)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (len(self.indices),)

    def get_config(self):
        return {**super().get_config(), "indices": list(self.indices)}


def condensing_stage(progress: float, condense_factor: int) -> int:
    """Condensing stage (0 .. C-1) reached at a training progress in [0, 1]: C-1 equal steps over
    the first half of training, as in the official LearnedGroupConv."""
    final = condense_factor - 1
    return final if final == 0 else min(final, int(progress * 2 * final))


@keras.saving.register_keras_serializable(package=_PACKAGE)
class LearnedGroupConv(keras.layers.Layer):
    """Training-time learned group 1x1 convolution (the paper's L-Conv).

    A full 1x1 kernel times a 0/1 mask. Output channel o belongs to group o % groups (the
    official layout, which the condensed model's Permute restores). Each condensing stage drops,
    in every group, the in/C still-connected input channels with the smallest L1 weight over the
    group's outputs; after C-1 stages each group reads in/C inputs and `condense` turns the layer
    into Index + grouped Conv2D + Permute.
    """

    qat_spec = (("kernel",), True)  # the masked kernel is quantised per output channel
    prune_role = "fixed"  # its mask ties input channels to groups
    tflite_ops = ("CONV_2D",)

    def __init__(self, filters, *, groups, condense_factor=None, group_lasso=0.0,
                 kernel_initializer=None, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.groups = int(groups)
        self.condense_factor = int(condense_factor or groups)
        self.group_lasso = float(group_lasso)
        self.kernel_initializer = keras.initializers.get(kernel_initializer or conv_initializer())
        if self.groups < 1 or self.condense_factor < 1 or self.filters % self.groups:
            raise ValueError(f"LearnedGroupConv {self.name!r}: filters={filters} must split into "
                             f"groups={groups} >= 1 (condense_factor={condense_factor})")

    @property
    def final_stage(self) -> int:
        return self.condense_factor - 1

    def build(self, input_shape):
        channels = int(input_shape[-1])
        if channels % self.condense_factor:
            raise ValueError(f"LearnedGroupConv {self.name!r}: {channels} input channels do not "
                             f"split by condense_factor={self.condense_factor}")
        shape = (1, 1, channels, self.filters)
        self.kernel = self.add_weight("kernel", shape, initializer=self.kernel_initializer)
        self.kernel_variable = self.kernel  # QAT replaces `kernel` by its fake-quantised tensor
        self.mask = self.add_weight("mask", shape, initializer="ones", trainable=False)
        self.stage = self.add_weight("stage", (), dtype="int32", initializer="zeros", trainable=False)
        if self.group_lasso:
            self.add_loss(self._group_lasso_penalty)
        super().build(input_shape)

    def call(self, inputs):
        return tf.nn.conv2d(inputs, self.kernel * self.mask, strides=1, padding="VALID")

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.filters,)

    def _group_lasso_penalty(self):
        """lambda * sum over groups and inputs of the L2 norm of that input's weights in the group,
        active until the last stage (official `lasso_loss`)."""
        weight = tf.reshape(self.kernel_variable * self.mask, (-1, self.filters // self.groups, self.groups))
        norms = tf.sqrt(tf.maximum(tf.reduce_sum(tf.square(weight), axis=1), 1e-6))
        active = tf.cast(self.stage < self.final_stage, norms.dtype)
        return self.group_lasso * active * tf.reduce_sum(norms)

    def group_mask(self) -> np.ndarray:
        """(inputs, groups) booleans: which input channels each group still reads."""
        mask = self.mask.numpy()[0, 0]  # (inputs, filters); output o is in group o % groups
        return mask.reshape(mask.shape[0], -1, self.groups).max(axis=1) > 0

    def group_inputs(self) -> list[list[int]]:
        """The input channels each group reads, ascending."""
        mask = self.group_mask()
        return [np.flatnonzero(mask[:, g]).tolist() for g in range(self.groups)]

    def advance_to(self, stage: int) -> None:
        """Run the condensing stages up to `stage` (no-op if already there)."""
        stage = min(int(stage), self.final_stage)
        current = int(self.stage.numpy())
        if stage <= current:
            return
        per_stage = self.kernel.shape[2] // self.condense_factor
        keep = self.group_mask()
        importance = np.abs(self.kernel_variable.numpy()[0, 0] * self.mask.numpy()[0, 0])
        importance = importance.reshape(importance.shape[0], -1, self.groups).sum(axis=1)
        for g in range(self.groups):
            kept = np.flatnonzero(keep[:, g])
            weakest = kept[np.argsort(importance[kept, g], kind="stable")][:per_stage * (stage - current)]
            keep[weakest, g] = False
        mask = np.repeat(keep[:, None, :], self.filters // self.groups, axis=1).reshape(keep.shape[0], -1)
        self.mask.assign(mask[None, None].astype(np.float32))
        self.stage.assign(stage)

    @property
    def is_condensed(self) -> bool:
        return int(self.stage.numpy()) >= self.final_stage

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "groups": self.groups,
                "condense_factor": self.condense_factor, "group_lasso": self.group_lasso,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer)}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class CondensingDense(keras.layers.Dense):
    """Training-time classifier that, once condensed, reads only the `keep` fraction of its input
    features with the largest L1 weight (the official CondensingLinear keeps half)."""

    qat_spec = (("kernel",), True)
    prune_role = "fixed"  # its mask selects input features
    tflite_ops = ("FULLY_CONNECTED",)

    def __init__(self, units, *, keep=0.5, **kwargs):
        super().__init__(units, **kwargs)
        self.keep = float(keep)
        if not 0.0 < self.keep <= 1.0:
            raise ValueError(f"CondensingDense keep must be in (0, 1], got {keep!r}")

    def build(self, input_shape):
        super().build(input_shape)
        self.kernel_variable = self.kernel  # QAT replaces `kernel` by its fake-quantised tensor
        features = int(input_shape[-1])
        self.mask = self.add_weight("mask", (features, 1), initializer="ones", trainable=False)
        self.condensed = self.add_weight("condensed", (), dtype="int32", initializer="zeros",
                                         trainable=False)

    def call(self, inputs):
        outputs = tf.matmul(inputs, self.kernel * self.mask)
        if self.use_bias:
            outputs = tf.nn.bias_add(outputs, self.bias)
        return self.activation(outputs) if self.activation is not None else outputs

    def kept_features(self) -> list[int]:
        return np.flatnonzero(self.mask.numpy()[:, 0] > 0).tolist()

    def keep_count(self) -> int:
        return max(1, int(self.kernel.shape[0] * self.keep))

    def condense(self) -> None:
        """Keep the features with the largest summed |weight| over the classes (once)."""
        if self.is_condensed:
            return
        importance = np.abs(self.kernel_variable.numpy()).sum(axis=1)
        kept = np.sort(np.argsort(-importance, kind="stable")[:self.keep_count()])
        mask = np.zeros((self.kernel.shape[0], 1), np.float32)
        mask[kept] = 1.0
        self.mask.assign(mask)
        self.condensed.assign(1)

    @property
    def is_condensed(self) -> bool:
        return bool(self.condensed.numpy())

    def get_config(self):
        return {**super().get_config(), "keep": self.keep}


def block_diagonal(kernel, groups: int):
    """The full (kh, kw, in, out) kernel equal to a grouped (kh, kw, in/groups, out) one: group j's
    weights on its own input channels, zeros elsewhere."""
    if groups == 1:
        return kernel
    per_group_in = kernel.shape[2]
    parts = tf.split(kernel, groups, axis=-1)
    return tf.concat([tf.pad(part, [[0, 0], [0, 0], [j * per_group_in, (groups - 1 - j) * per_group_in],
                                    [0, 0]]) for j, part in enumerate(parts)], axis=-1)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class BlockDiagonalConv2D(keras.layers.Conv2D):
    """Grouped Conv2D (same config and weights) that runs as a dense conv with a block-diagonal
    kernel: TensorFlow's CPU gradient of grouped convolutions is ~30x slower than a dense conv
    with G times the work. Training-time models use it; `condense` turns it into a Conv2D."""

    qat_spec = (("kernel",), True)
    prune_role = "fixed"  # training-time only: condense it first
    tflite_ops = ("CONV_2D",)

    def call(self, inputs):
        outputs = self.convolution_op(inputs, block_diagonal(self.kernel, self.groups))
        if self.use_bias:
            outputs = tf.nn.bias_add(outputs, self.bias)
        return self.activation(outputs) if self.activation is not None else outputs


def group_conv(x, filters, kernel, *, groups, condensing, name):
    """Bias-free grouped conv: BlockDiagonalConv2D in training-time models, else Conv2D."""
    conv = BlockDiagonalConv2D if condensing and groups > 1 else L.Conv2D
    return conv(filters, kernel, padding="same", groups=groups, use_bias=False,
                kernel_initializer=conv_initializer(), name=name)(x)


# ---------------------------------------------------------------------------------------------
# training: the condensing schedule


def _unwrapped(layer):
    """The layer itself, or the one a QAT/pruning wrapper holds."""
    return getattr(layer, "layer", layer)


def condensing_layers(model) -> list:
    """The LearnedGroupConv and CondensingDense layers of a model (inside QAT wrappers too)."""
    found = [_unwrapped(layer) for layer in model.layers]
    return [layer for layer in found if isinstance(layer, (LearnedGroupConv, CondensingDense))]


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


def placeholder_indices(in_channels: int, groups: int, condense_factor: int) -> list[int]:
    """Index layer contents of a condensed model built from scratch: group g reads the in/C
    channels after those of group g-1, wrapping around (the identity when G = C)."""
    per_group = in_channels // condense_factor
    return [(g * per_group + r) % in_channels for g in range(groups) for r in range(per_group)]


def condensed_group_conv(x, filters, *, groups, indices, name):
    """Test-time learned group conv: Index (GATHER) -> grouped 1x1 conv -> Permute (shuffle)."""
    x = ChannelGather(indices, name=f"{name}_index")(x)
    x = L.Conv2D(filters, 1, groups=groups, use_bias=False, kernel_initializer=conv_initializer(),
                 name=f"{name}_conv")(x)
    return blocks.channel_shuffle(x, groups, name=f"{name}_permute") if groups > 1 else x


def learned_group_conv(x, filters, *, groups, condense_factor, condensing, group_lasso=0.0, name):
    """A learned group 1x1 conv in its training-time (`condensing=True`) or condensed form."""
    if condensing:
        return LearnedGroupConv(filters, groups=groups, condense_factor=condense_factor,
                                group_lasso=group_lasso, name=name)(x)
    if x.shape[-1] % condense_factor:
        raise ValueError(f"{name}: {x.shape[-1]} input channels do not split by condense_factor={condense_factor}")
    indices = placeholder_indices(x.shape[-1], groups, condense_factor)
    return condensed_group_conv(x, filters, groups=groups, indices=indices, name=name)


def condensed_kernel(layer: LearnedGroupConv) -> tuple[list[int], np.ndarray]:
    """Index list and grouped (1, 1, in/C, filters) kernel equal to a fully condensed layer.

    Condensed output j = g * (filters / G) + t is training-time output g + t * G: the Permute after
    the grouped conv puts it back in place.
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
    dense = L.Dense(layer.units, activation=layer.activation, use_bias=layer.use_bias, name=layer.name)
    weights = [layer.kernel_variable.numpy()[kept]] + ([layer.bias.numpy()] if layer.use_bias else [])
    assignments[layer.name] = weights
    return dense(ChannelGather(kept, name=f"{layer.name}_index")(x))


def _copied_layer(layer, x, assignments):
    kind = L.Conv2D if isinstance(layer, BlockDiagonalConv2D) else layer.__class__
    clone = kind.from_config(layer.get_config())
    assignments[layer.name] = layer.get_weights()
    return clone(x)


def _check_condensed(model):
    pending = [layer.name for layer in condensing_layers(model) if not layer.is_condensed]
    if pending:
        raise ValueError(f"condense() needs a fully condensed training-time model; "
                         f"{', '.join(pending[:5])}{' ...' if len(pending) > 5 else ''} have not "
                         "reached their last condensing stage: train with CondensationSchedule "
                         "or call finish_condensation(model) first")


def condense(model: keras.Model) -> keras.Model:
    """Rebuild a trained training-time model as the condensed test-time model (builtin ops only).

    Every LearnedGroupConv becomes Index + grouped Conv2D + Permute, a CondensingDense becomes
    Index + Dense and a BlockDiagonalConv2D a grouped Conv2D; all other layers are copied with
    their weights. The result has the registered
    structure of its variant and the same outputs as `model`.
    """
    if not isinstance(model, keras.Model) or not getattr(model, "_is_graph_network", False):
        raise TypeError(f"condense() needs a functional tf_keras Model, got {type(model).__name__}")
    _check_condensed(model)
    new = {}  # id(training-time tensor) -> condensed tensor
    assignments = {}  # layer name -> weights to set once the model exists
    inputs = []
    for layer in model.layers:
        if isinstance(layer, L.InputLayer):
            tensor = L.Input(shape=layer.output.shape[1:], name=layer.name)
            inputs.append(tensor)
            new[id(layer.output)] = tensor
            continue
        x = tf.nest.map_structure(lambda t: new[id(t)], layer.input)
        if isinstance(layer, LearnedGroupConv):
            out = _condensed_lgc(layer, x, assignments)
        elif isinstance(layer, CondensingDense):
            out = _condensed_dense(layer, x, assignments)
        else:
            out = _copied_layer(layer, x, assignments)
        new[id(layer.output)] = out
    condensed = keras.Model(inputs, [new[id(t)] for t in model.outputs], name=model.name)
    for name, weights in assignments.items():
        condensed.get_layer(name).set_weights(weights)
    return condensed


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


CONFIGS = {
    "condensenet50_cifar": CondenseNetConfig((8, 8, 8), (8, 16, 32)),
    "condensenet86_cifar": CondenseNetConfig((14, 14, 14), (8, 16, 32)),
    "condensenet74_g4": CondenseNetConfig((4, 6, 8, 10, 8), (8, 16, 32, 64, 128), stem_stride=2),
    "condensenet74_g8": CondenseNetConfig((4, 6, 8, 10, 8), (8, 16, 32, 64, 128), groups=8,
                                          condense_factor=8, stem_stride=2),
}


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
    x = ChannelGather(kept, name="head_fc_index")(x)
    return L.Dense(classes, activation=classifier_activation, name="head_fc")(x)


def _check_variant_kwargs(kwargs, name):
    if kwargs:
        raise TypeError(f"{name} takes only the variant arguments condensing and group_lasso, "
                        f"got {', '.join(sorted(kwargs))}")


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


def _build(name, kwargs):
    variant = {k: kwargs.pop(k) for k in ("condensing", "group_lasso") if k in kwargs}
    arch = {k: kwargs.pop(k) for k in ("input_shape", "classes", "include_top", "pooling",
                                       "classifier_activation")}
    _check_variant_kwargs(kwargs, name)
    return build_condensenet(CONFIGS[name], name=name, **arch, **variant)


def condensenet_train(name: str, **kwargs) -> keras.Model:
    """Training-time model of a registered CondenseNet (`create_model(name, condensing=True)`)."""
    from kerasnets.registry import create_model

    return create_model(name, condensing=True, **kwargs)


_OFFICIAL = "ShichenLiu/CondenseNet"


def _source(params, flops, recount, macs):
    """Where a variant's figures come from: the published FLOPs include the ReLU and pooling
    operations the official counter adds, so the registered MACs are the conv/linear part."""
    return (f"paper and {_OFFICIAL} README: {params} params, {flops} FLOPs of the condensed model; "
            f"the official counter (utils.measure_model: conv/linear multiply-adds + 1 per ReLU and "
            f"pooled element) gives {recount} on this structure, of which {macs} are conv/linear MACs")


@register_model(
    paper=PAPER, params=0.22e6, macs=27.18e6, input_shape=(32, 32, 3), classes=10, min_size=4,
    source=_source("0.22M", "28.6M", "28.64M", "27.18M"),
    notes=f"stages 8-8-8, growth 8-16-32, G=C=4, bottleneck 4 ({_OFFICIAL} CIFAR recipe at depth 50)")
def condensenet50_cifar(**kwargs) -> keras.Model:
    return _build("condensenet50_cifar", kwargs)


@register_model(
    paper=PAPER, params=0.52e6, macs=62.38e6, input_shape=(32, 32, 3), classes=10, min_size=4,
    source=_source("0.52M", "65.8M", "65.81M", "62.38M"),
    notes=f"stages 14-14-14, growth 8-16-32, G=C=4, bottleneck 4 ({_OFFICIAL} script.sh)")
def condensenet86_cifar(**kwargs) -> keras.Model:
    return _build("condensenet86_cifar", kwargs)


@register_model(
    paper=PAPER, params=4.8e6, macs=516.6e6, input_shape=(224, 224, 3), classes=1000, min_size=32,
    source=_source("4.8M", "529M", "529.3M", "516.6M"),
    notes=f"stages 4-6-8-10-8, growth 8-16-32-64-128, G=C=4 ({_OFFICIAL} script.sh)")
def condensenet74_g4(**kwargs) -> keras.Model:
    return _build("condensenet74_g4", kwargs)


@register_model(
    paper=PAPER, params=2.9e6, macs=261.5e6, input_shape=(224, 224, 3), classes=1000, min_size=32,
    source=_source("2.9M", "274M", "274.2M", "261.5M"),
    notes=f"stages 4-6-8-10-8, growth 8-16-32-64-128, G=C=8 ({_OFFICIAL} README)")
def condensenet74_g8(**kwargs) -> keras.Model:
    return _build("condensenet74_g8", kwargs)
