"""Small serialisable layers the zoo needs beyond tf_keras' own (no Lambda layers anywhere).

Each custom layer declares, as class attributes, what the rest of the system must know about it,
so that `import kerasnets` stays free of TFMOT and of the pruning engine:

- `qat_spec = (weight attribute names to quantise, whether to quantise its output)`, which
  `kerasnets.pipelines.quantize` turns into a TFMOT QuantizeConfig; a layer that runs a kernel
  made from its stored one (the Indexed layers scatter a compact kernel into a dense one) names
  that method in `qat_runs`, so QAT fake-quantises the kernel TFLite will hold, and hands it back
  in the layer's `run_kernel`;
- `prune_role`: how the channel dependency analysis of `kerasnets.pipelines.prune` treats it —
  "elementwise" (channels pass through one to one), "merge" (element-wise over same-width
  inputs), "indexed" (reads the input channels its `indices` lists, group by group, and writes
  filter t of group g at output channel g + t * groups: its index and kernel rows are cut and
  renumbered with the input channels) or "fixed" (its input and output channels are kept as
  they are);
- `tflite_ops`: the TFLite builtin ops it lowers to (all of them run on TFLite Micro);
  training-time-only layers (LearnedGroupConv, CondensingDense, BlockDiagonalConv2D) name the op
  their computation maps to, though `kerasnets.condensenet.condense` replaces them before export.

`CUSTOM_OBJECTS` maps every class name here to its class (for `custom_objects=` when loading).
"""
import numpy as np
import tensorflow as tf
import tf_keras as keras

_PACKAGE = "kerasnets"


@keras.saving.register_keras_serializable(package=_PACKAGE)
class HardSigmoid(keras.layers.Layer):
    """relu6(x + 3) / 6, the gate of MobileNetV3 and GhostNet squeeze-excite."""

    qat_spec = ((), True)
    prune_role = "elementwise"
    tflite_ops = ("ADD", "RELU6", "MUL")
    # TFLite computes it as ADD (+3, RELU6 fused) then MUL, and int8 needs a scale for the tensor
    # between them. Without a fake-quant there, the converter takes the range it saw on its
    # calibration images (3.5 of the 6 in a GhostNet gate), and the deployed gate clips where the QAT
    # model's did not. The QAT model (`quantize_model` sets `quantize_inner`) quantises that tensor
    # over its whole range [0, 6] instead, and the converter uses the same scale.
    qat_inner_range = (0.0, 6.0)
    quantize_inner = False

    def call(self, inputs):
        inner = tf.nn.relu6(inputs + 3.0)
        if self.quantize_inner:
            inner = tf.quantization.fake_quant_with_min_max_args(inner, *self.qat_inner_range, num_bits=8)
        return inner * (1.0 / 6.0)

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package=_PACKAGE)
class HardSwish(keras.layers.Layer):
    """x * relu6(x + 3) / 6 (MobileNetV3); the TFLite converter fuses it into HARD_SWISH."""

    qat_spec = ((), True)
    prune_role = "elementwise"
    tflite_ops = ("HARD_SWISH",)

    def call(self, inputs):
        return inputs * tf.nn.relu6(inputs + 3.0) * (1.0 / 6.0)

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ChannelSlice(keras.layers.Layer):
    """Channels [start, start + size) of an NHWC tensor: one STRIDED_SLICE, at most 4-D."""

    qat_spec = ((), False)  # moves values only: keeps its input's scale
    prune_role = "fixed"  # selects channels by position
    tflite_ops = ("STRIDED_SLICE",)

    def __init__(self, start, size, **kwargs):
        super().__init__(**kwargs)
        self.start, self.size = int(start), int(size)
        if self.start < 0 or self.size < 1:
            raise ValueError(f"ChannelSlice needs start >= 0 and size >= 1, got start={start}, size={size}")

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is not None and self.start + self.size > channels:
            raise ValueError(f"ChannelSlice [{self.start}, {self.start + self.size}) exceeds the "
                             f"{channels} input channels of layer {self.name!r}")
        super().build(input_shape)

    def call(self, inputs):
        return inputs[..., self.start:self.start + self.size]

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.size,)

    def get_config(self):
        return {**super().get_config(), "start": self.start, "size": self.size}


# ---------------------------------------------------------------------------------------------
# merge layers

@keras.saving.register_keras_serializable(package=_PACKAGE)
class Difference(keras.layers.Subtract):
    """inputs[0] - inputs[1] (one int8 SUB in TFLite); `qat_spec` because TFMOT's 8-bit
    registry has no entry for Subtract."""

    qat_spec = ((), True)
    prune_role = "merge"
    tflite_ops = ("SUB",)


# ---------------------------------------------------------------------------------------------
# CondenseNet / EffCNet: the Index layer and the training-time learned group convolutions

def conv_initializer():
    """He-normal over fan-out, the official code's normal(0, sqrt(2 / (k * k * out)))."""
    return keras.initializers.VarianceScaling(2.0, mode="fan_out", distribution="untruncated_normal")



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



def _scatter_positions(rows, cols, width) -> np.ndarray:
    """Flat positions (row * width + col) of a compact kernel's entries in its dense form."""
    return (np.asarray(rows, np.int64) * width + np.asarray(cols, np.int64)).reshape(-1, 1)


def _scattered(kernel, positions, shape):
    """The dense kernel: `kernel`'s entries added at `positions` of a zero tensor of `shape`. Added
    to explicit zeros rather than scattered into a new tensor, so the TFLite converter folds it into
    a constant at any sparsity (it does not fold a constant op whose result is over twice the size
    of its operands)."""
    flat = tf.tensor_scatter_nd_add(tf.zeros([int(np.prod(shape))], kernel.dtype), positions,
                                    tf.reshape(kernel, [-1]))
    return tf.reshape(flat, shape)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class IndexedGroupConv(keras.layers.Conv2D):
    """A condensed learned group 1x1 conv in one layer: the paper's Index + grouped 1x1 conv +
    Permute, folded into the weights. It holds the grouped (1, 1, len(indices)/groups, filters)
    kernel (the paper's parameters and MACs) and runs as one dense 1x1 conv whose kernel puts
    group g's weight for its r-th input on row `indices[g * per_group + r]` and condensed output
    g * filters/groups + t on column g + t * groups, where the Permute would have put it; zeros
    elsewhere (the training-time masked kernel).

    So TFLite sees one CONV_2D (a BatchNorm after it folds in), no GATHER and no TRANSPOSE. An index
    is an arbitrary selection from a tensor other layers read too (the dense block's features: a
    channel may feed several groups or none), so no neighbour but the one reading it can absorb it,
    and a grouped conv cannot absorb a selection that crosses its groups: the conv becomes dense.
    It executes `groups` times the MACs it counts, on zeros, which int8 CPU kernels and NPUs run
    at full rate, while a GATHER left the CPU's fast path (XNNPACK) and an Ethos-U's NPU.
    """

    qat_spec = (("kernel",), True)
    # QAT quantises the dense kernel per output channel (same values as quantising the compact
    # one: zeros move no channel's range): the converter cannot fold a scatter that follows a
    # fake-quant op, and a QAT model quantising the compact kernel did not convert
    qat_runs = "dense_kernel"
    run_kernel = None  # the fake-quantised dense kernel while QAT wraps the layer
    prune_role = "indexed"  # its index moves with the input channels; filter t of every group goes together
    tflite_ops = ("CONV_2D",)

    def __init__(self, filters, kernel_size=1, *, indices, **kwargs):
        super().__init__(filters, kernel_size, **kwargs)
        self.indices = [int(i) for i in indices]
        if self.kernel_size != (1, 1) or self.strides != (1, 1) or self.dilation_rate != (1, 1):
            raise ValueError(f"IndexedGroupConv {self.name!r} is a 1x1 stride-1 conv, got kernel_size="
                             f"{self.kernel_size}, strides={self.strides}, dilation_rate={self.dilation_rate}")
        if not self.indices or min(self.indices) < 0 or len(self.indices) % self.groups:
            raise ValueError(f"IndexedGroupConv {self.name!r} needs a non-empty index of channels >= 0 "
                             f"that splits into groups={self.groups}, got {len(self.indices)} indices")

    def build(self, input_shape):
        channels = int(input_shape[-1])
        if max(self.indices) >= channels:
            raise ValueError(f"IndexedGroupConv index {max(self.indices)} is out of range for the "
                             f"{channels} input channels of layer {self.name!r}")
        super().build(tuple(input_shape[:-1]) + (len(self.indices),))  # the grouped kernel
        self._build_input_shape = input_shape  # what a clone or a loaded copy is built from (see IndexedDense)
        self.input_spec = keras.layers.InputSpec(min_ndim=4, axes={-1: channels})
        per_group_in, per_group_out = len(self.indices) // self.groups, self.filters // self.groups
        rows = np.reshape(self.indices, (self.groups, per_group_in))  # [g, r]
        group, r, t = np.meshgrid(np.arange(self.groups), np.arange(per_group_in),
                                  np.arange(per_group_out), indexing="ij")
        # kernel[0, 0, r, g * per_group_out + t] -> dense[indices[g * per_group_in + r], g + t * groups]
        order = np.argsort((r * self.filters + group * per_group_out + t).ravel())  # kernel's flat order
        positions = _scatter_positions(rows[group, r], group + t * self.groups, self.filters)
        self._positions = positions[order]
        self._dense_shape = (1, 1, channels, self.filters)

    def dense_kernel(self, kernel=None):
        """The (1, 1, input channels, filters) kernel the layer runs (made from `kernel`, by default
        the layer's own compact one)."""
        return _scattered(self.kernel if kernel is None else kernel, self._positions, self._dense_shape)

    def call(self, inputs):
        kernel = self.dense_kernel() if self.run_kernel is None else self.run_kernel
        outputs = tf.nn.conv2d(inputs, kernel, strides=1, padding="VALID")
        if self.use_bias:
            outputs = tf.nn.bias_add(outputs, self.bias)
        return self.activation(outputs) if self.activation is not None else outputs

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.filters,)

    def get_config(self):
        return {**super().get_config(), "indices": list(self.indices)}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class IndexedDense(keras.layers.Dense):
    """Dense on the input features `indices` (the condensed classifier), folded into the weights:
    it holds the (len(indices), units) kernel and multiplies by the (features, units) one with
    those rows filled and zeros elsewhere, so TFLite sees one FULLY_CONNECTED and no GATHER."""

    qat_spec = (("kernel",), True)
    qat_runs = "dense_kernel"  # as IndexedGroupConv's
    run_kernel = None
    prune_role = "indexed"  # its index moves with the input features
    tflite_ops = ("FULLY_CONNECTED",)

    def __init__(self, units, *, indices, **kwargs):
        super().__init__(units, **kwargs)
        self.indices = [int(i) for i in indices]
        if not self.indices or min(self.indices) < 0:
            raise ValueError(f"IndexedDense needs a non-empty list of indices >= 0, got {indices!r}")

    def build(self, input_shape):
        features = int(input_shape[-1])
        if max(self.indices) >= features:
            raise ValueError(f"IndexedDense index {max(self.indices)} is out of range for the "
                             f"{features} input features of layer {self.name!r}")
        super().build(tuple(input_shape[:-1]) + (len(self.indices),))
        # the parent records the shape it was built with, the kept features only; a model loaded
        # from .keras then rebuilt this layer from that in a clone (QAT's quantize_apply), for the
        # wrong number of features (condensenet50_cifar's head: "[?,464] x [232,10]")
        self._build_input_shape = input_shape
        self.input_spec = keras.layers.InputSpec(min_ndim=2, axes={-1: features})
        rows, cols = np.meshgrid(self.indices, np.arange(self.units), indexing="ij")
        self._positions = _scatter_positions(rows, cols, self.units)
        self._dense_shape = (features, self.units)

    def dense_kernel(self, kernel=None):
        return _scattered(self.kernel if kernel is None else kernel, self._positions, self._dense_shape)

    def call(self, inputs):
        kernel = self.dense_kernel() if self.run_kernel is None else self.run_kernel
        outputs = tf.matmul(inputs, kernel)
        if self.use_bias:
            outputs = tf.nn.bias_add(outputs, self.bias)
        return self.activation(outputs) if self.activation is not None else outputs

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self):
        return {**super().get_config(), "indices": list(self.indices)}


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



CUSTOM_OBJECTS = {cls.__name__: cls for cls in (
    HardSigmoid, HardSwish, ChannelSlice, Difference, ChannelGather, IndexedGroupConv, IndexedDense,
    LearnedGroupConv, CondensingDense, BlockDiagonalConv2D)}
