"""Small serialisable layers the zoo needs beyond tf_keras' own (no Lambda layers anywhere).

Each custom layer declares, as class attributes, what the rest of the system must know about it,
so that `import kerasnets` stays free of TFMOT and of the pruning engine:

- `qat_spec = (weight attribute names to quantise, whether to quantise its output)`, which
  `kerasnets.pipelines.quantize` turns into a TFMOT QuantizeConfig;
- `prune_role`: how the channel dependency analysis of `kerasnets.pipelines.prune` treats it —
  "elementwise" (channels pass through one to one), "merge" (element-wise over same-width
  inputs) or "fixed" (its input and output channels are kept as they are);
- `tflite_ops`: the TFLite builtin ops it lowers to (all of them run on TFLite Micro).
"""
import tensorflow as tf
import tf_keras as keras

_PACKAGE = "kerasnets"


@keras.saving.register_keras_serializable(package=_PACKAGE)
class HardSigmoid(keras.layers.Layer):
    """relu6(x + 3) / 6, the gate of MobileNetV3 and GhostNet squeeze-excite."""

    qat_spec = ((), True)
    prune_role = "elementwise"
    tflite_ops = ("ADD", "RELU6", "MUL")

    def call(self, inputs):
        return tf.nn.relu6(inputs + 3.0) * (1.0 / 6.0)

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


CUSTOM_OBJECTS = {cls.__name__: cls for cls in (HardSigmoid, HardSwish, ChannelSlice)}
