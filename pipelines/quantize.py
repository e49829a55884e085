"""Quantisation-aware training: TFMOT's 8-bit QAT, with QuantizeConfigs for the zoo's layers
that TFMOT's default registry does not know (Multiply in squeeze-excite, hard activations,
channel slices, BatchNorm that follows no conv)."""
from __future__ import annotations

import contextlib

import numpy as np

import tensorflow as tf
import tensorflow_model_optimization as tfmot
import tf_keras as keras
from tf_keras.src.utils import control_flow_util
# the input QuantizeLayer is not in TFMOT's public API; its saving needs a fix (below)
from tensorflow_model_optimization.python.core.quantization.keras import quantize_layer as _quantize_layer
# nor is the no-op config a layout transform gives a layer (the max-pool fix below)
from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import \
    default_8bit_quantize_configs as _configs
# nor is the conv config its registry gives a DepthwiseConv2D (replaced below)
from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import \
    default_8bit_quantize_registry as _registry
# nor is its ConcatTransform, extended below to concatenations of more than six inputs
from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import \
    default_8bit_transforms as _default_transforms

_Q = tfmot.quantization.keras
_quantizers = _Q.quantizers
_transforms = _Q.graph_transformations.transforms


class LayerQuantizeConfig(_Q.QuantizeConfig):
    """8-bit QAT for a zoo layer: named weights get symmetric quantisers (per output channel for a
    conv kernel, as TFLite's int8 conv kernels), the output an 8-bit moving-average quantiser
    unless it only moves values."""

    def __init__(self, weights=(), quantize_output=True, runs=None):
        self.weights = tuple(weights)
        self.quantize_output = bool(quantize_output)
        self.runs = runs  # the layer's `qat_runs`: the method making the kernel it runs
        if runs is not None and len(self.weights) != 1:
            raise ValueError(f"runs={runs!r} needs exactly one weight to make the kernel from, got {self.weights}")

    def get_weights_and_quantizers(self, layer):
        weights = [getattr(layer, name) for name in self.weights]
        if self.runs is not None:
            return [(weights[0], _RunKernelQuantizer(getattr(layer, self.runs), _per_channel(weights[0])))]
        return [(weight, _weight_quantizer(_per_channel(weight))) for weight in weights]

    def get_activations_and_quantizers(self, layer):
        return []

    def set_quantize_weights(self, layer, quantize_weights):
        if self.runs is not None:
            layer.run_kernel = quantize_weights[0]  # already the kernel it runs: the layer skips its own step
            return
        for name, weight in zip(self.weights, quantize_weights):
            setattr(layer, name, weight)

    def set_quantize_activations(self, layer, quantize_activations):
        if getattr(layer, "qat_inner_range", None):  # a fixed-range fake-quant inside (HardSigmoid)
            layer.quantize_inner = True

    def get_output_quantizers(self, layer):
        if not self.quantize_output:
            return []
        return [_quantizers.MovingAverageQuantizer(num_bits=8, per_axis=False, symmetric=False,
                                                   narrow_range=False)]

    def get_config(self):
        return {"weights": list(self.weights), "quantize_output": self.quantize_output, "runs": self.runs}


def _per_channel(weight) -> bool:
    """Conv kernels (4-D) are quantised per output channel, as TFLite's int8 CONV_2D; a dense
    kernel per tensor, as TFMOT does for Dense: TFLite stores FULLY_CONNECTED weights transposed,
    and the converter refuses a per-channel axis that a transpose moves."""
    return len(weight.shape) == 4


def _weight_quantizer(per_channel):
    return _quantizers.LastValueQuantizer(num_bits=8, per_axis=per_channel, symmetric=True, narrow_range=True)


class _RunKernelQuantizer(_quantizers.LastValueQuantizer):
    """Symmetric 8-bit quantiser of the kernel a layer makes from its weight with `make_kernel`
    (`qat_runs`): the fake-quant op then feeds the conv directly, as the TFLite converter needs;
    the made kernel has the weight's last axis, so the per-channel ranges are the same variables."""

    def __init__(self, make_kernel, per_channel):
        super().__init__(num_bits=8, per_axis=per_channel, symmetric=True, narrow_range=True)
        self._make_kernel = make_kernel

    def __call__(self, inputs, training, weights, **kwargs):
        return super().__call__(self._make_kernel(inputs), training, weights, **kwargs)


# Keras layers TFMOT's registry lacks (Rescaling and Normalization: input layers of Keras 3
# models, see kerasnets/keras3.py). Zoo layers instead declare `qat_spec = (weight attribute
# names, quantize_output)` as plain data, so the zoo itself never imports TFMOT.
# AveragePooling2D is in TFMOT's registry, but with an output quantiser of its own: TFLite's int8
# AVERAGE_POOL_2D needs the same scale in and out, so a QAT model with one did not convert (DenseNet's
# and CondenseNet's transitions). Without it the output keeps the input's scale, as TFLite computes it.
_SPEC_FOR_KERAS_LAYER = {keras.layers.Multiply: ((), True), keras.layers.Rescaling: ((), True),
                         keras.layers.Normalization: ((), True), keras.layers.AveragePooling2D: ((), False)}


# TFMOT folds BatchNorm into these only; a Dense-BN pair (VGG's classifier) is not folded in QAT
# and, left to TFMOT's registry, converted to int8 without its BatchNorm's effect
_FOLDS_BATCHNORM = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)


def _is_standalone_batchnorm(layer) -> bool:
    """A BatchNorm TFMOT cannot fold into the layer before it (pre-activation nets: BN-ReLU-Conv;
    Dense-BN); it gets an output quantiser like any other op, and TFLite's int8 then matches."""
    if type(layer) is not keras.layers.BatchNormalization:
        return False
    source = layer.inbound_nodes[0].inbound_layers
    # by exact type: TFMOT's fold does not know a subclass (the zoo's IndexedGroupConv, BlockDiagonalConv2D)
    return not (type(source) in _FOLDS_BATCHNORM and len(source.outbound_nodes) == 1)


def _runs_as_depthwise(layer) -> bool:
    """A standalone BatchNorm of a feature map (axis last): QAT runs it as the 1x1 depthwise
    convolution TFLite's int8 kernels compute it with (`DepthwiseBatchNorm`)."""
    return (_is_standalone_batchnorm(layer) and len(layer.input_shape) == 4
            and list(layer.axis) in ([3], [-1]))


@keras.utils.register_keras_serializable("kerasnets")
class DepthwiseBatchNorm(keras.layers.BatchNormalization):
    """A standalone BatchNorm as QAT trains and TFLite's int8 kernels compute it.

    In training it is the BatchNorm it replaces (batch statistics, moving statistics updated).
    Frozen statistics there made the gradient into the layers before it that of the float net in
    inference mode, ~10x the training-mode one: one QAT epoch at 1e-4 (16 batches of 32) took a
    condensenet50_cifar trained on digits from 93% to 29%; on batch statistics, to 96%.

    In inference (and so in the converted model) it is the 1x1 depthwise convolution of its affine
    map. Left a BatchNorm, the converter splits it into MUL then ADD (the ReLU fused into the ADD)
    and rounds the MUL's product of every channel to one per-tensor int8 scale set by calibration,
    which no fake-quant op of the QAT model mirrors (a BN-ReLU after a concatenation, factors 100x
    apart: 32% of its int8 outputs a step or more off the QAT model's). As a depthwise convolution
    it is one int8 op, each channel's factor exact in its own per-channel weight scale, rounded once
    at the output as the QAT model rounds it (0.24% off)."""

    def call(self, inputs, training=None):
        batchnorm = super().call
        return control_flow_util.smart_cond(self._get_training_value(training),
                                            lambda: batchnorm(inputs, training=True),
                                            lambda: self._as_depthwise(inputs))

    def _as_depthwise(self, inputs):
        variance, mean = self.moving_variance, self.moving_mean
        factor = tf.math.rsqrt(variance + self.epsilon)
        if self.scale:
            factor *= self.gamma
        offset = -mean * factor + (self.beta if self.center else 0.0)
        kernel = tf.reshape(tf.cast(factor, inputs.dtype), (1, 1, -1, 1))
        outputs = tf.nn.depthwise_conv2d(inputs, kernel, (1, 1, 1, 1), "VALID")
        return tf.nn.bias_add(outputs, tf.cast(offset, inputs.dtype))


def _as_depthwise_batchnorm(layer) -> DepthwiseBatchNorm:
    """`layer` (a BatchNormalization) as a `DepthwiseBatchNorm` with its weights."""
    replacement = DepthwiseBatchNorm.from_config(layer.get_config())
    replacement.build(layer.input_shape)
    replacement.set_weights(layer.get_weights())
    return replacement


def _config_for(layer):
    if _is_standalone_batchnorm(layer):
        # no weight quantiser: the converter quantises each channel's one factor exactly; no output
        # quantiser where a ReLU follows the depthwise convolution, as the int8 op fuses it
        return LayerQuantizeConfig((), not (_runs_as_depthwise(layer) and _one_reader_passes(layer, _is_relu)))
    spec = _SPEC_FOR_KERAS_LAYER.get(type(layer), getattr(layer, "qat_spec", None))
    return None if spec is None else LayerQuantizeConfig(*spec, runs=getattr(layer, "qat_runs", None))


def _variable_key(variable) -> str:
    """A QAT layer's variable by its own name ("kernel", "kernel_min"): the name scope in front of
    it differs between a model built by `quantize_apply` and the same model loaded from a file."""
    return variable.name.split("/")[-1].split(":")[0]


class _SavedByName:
    """Saving for TFMOT's QAT layers that survives the .keras format. TFMOT's layers are filed by
    position there, but their variable lists differ between a model built by `quantize_apply` (the
    wrapper lists the kernel twice and the bias too) and the same model rebuilt from its config (the
    input QuantizeLayer was even built twice), so a saved QAT model did not load
    (tensorflow/model-optimization#1123). Here each variable is filed under its own name, and the
    layer is built only when the graph calls it, as when it was saved."""

    def build_from_config(self, config):
        del config  # built when the functional graph calls the layer

    def save_own_variables(self, store):
        saved = {}
        for variable in self._trainable_weights + self._non_trainable_weights:
            key = _variable_key(variable)
            if key in saved:
                if saved[key] is not variable:
                    raise ValueError(f"QAT layer {self.name}: two variables named {key!r}; cannot save it "
                                     "in the .keras format, save the model as .h5")
                continue  # the wrapper lists its kernel twice
            saved[key] = variable
            store[key] = variable.numpy()

    def load_own_variables(self, store):
        keys = set(store.keys())
        if keys and all(key.isdigit() for key in keys):
            raise ValueError(f"QAT layer {self.name} was saved by TFMOT's own layer, whose .keras files do not "
                             "load (tensorflow/model-optimization#1123): save QAT models made by "
                             "kerasnets.pipelines.quantize.quantize_model, or use the .h5 format")
        for variable in self._trainable_weights + self._non_trainable_weights:
            key = _variable_key(variable)
            if key not in keys:
                raise ValueError(f"QAT layer {self.name}: no saved value for {key!r} (saved: {sorted(keys)})")
            variable.assign(np.asarray(store[key]))


# Same class names as TFMOT's: the .keras format files a layer's variables under its class name.
_SAVED_BY_NAME = {tfmot_class: type(tfmot_class.__name__, (_SavedByName, tfmot_class), {})
                  for tfmot_class in (_quantize_layer.QuantizeLayer, _Q.QuantizeWrapper, _Q.QuantizeWrapperV2)}


def _save_by_name(model: keras.Model) -> keras.Model:
    """`model` (fresh from `quantize_apply`) with TFMOT's QAT layers switched to `_SavedByName`:
    same objects and weights, only the saving and loading methods differ."""
    for layer in model.layers:
        layer.__class__ = _SAVED_BY_NAME.get(type(layer), type(layer))
    return model


def _zoo_scope():
    """TFMOT's quantisation scope plus the zoo's layers and configs."""
    return _Q.quantize_scope({**keras.saving.get_custom_objects(), "LayerQuantizeConfig": LayerQuantizeConfig,
                              "DepthwiseQuantizeConfig": DepthwiseQuantizeConfig})


@contextlib.contextmanager
def quantize_scope():
    """Scope that loads QAT models holding the zoo's layers and configs (.keras and .h5)."""
    # TFMOT's own objects override the ones passed to its scope, so the fixed layers go inside it
    loadable = {cls.__name__: cls for cls in _SAVED_BY_NAME.values()}
    with _zoo_scope(), keras.utils.custom_object_scope(loadable):
        yield


# A max pool feeding a concatenation. TFMOT quantises a concatenation only at its output (its
# ConcatTransform drops the output quantiser of every layer feeding one), so the converter gives the
# pool's output the concatenation's scale; TFLite's int8 MAX_POOL_2D needs the same scale in and out,
# and its input had its own quantiser (the activation before it), so the QAT model did not convert
# (TripleNet's stem and transitions: "'tfl.max_pool_2d' op quantization parameters violate the same
# scale constraint"). The fix carries ConcatTransform through the pool: the activation feeding only
# the pool loses its output quantiser too, and takes the pool's scale. A max pool only selects
# values, so the fake-quant model computes the same function up to where the one quantiser sits.
_CARRIES_THROUGH_POOL = ("ReLU", "Activation")


def _pools_feeding_concat(model: keras.Model) -> frozenset[str]:
    """Names of the max pools that feed a Concatenate and are the only consumer of an activation."""
    names = set()
    for layer in model.layers:
        if type(layer) is not keras.layers.MaxPooling2D:
            continue
        source = layer.inbound_nodes[0].inbound_layers
        consumers = [node.outbound_layer for node in layer.outbound_nodes]
        if (type(source).__name__ in _CARRIES_THROUGH_POOL and len(source.outbound_nodes) == 1
                and any(isinstance(c, keras.layers.Concatenate) for c in consumers)):
            names.add(layer.name)
    return frozenset(names)


class _QuantizeAfterPoolConcat(_transforms.Transform):
    """Drops the output quantiser of the activation feeding a pool of `pools` (see above)."""

    def __init__(self, pools):
        self._pools = pools

    def pattern(self):
        return _transforms.LayerPattern("MaxPooling2D", inputs=[_transforms.LayerPattern(".*")])

    def replacement(self, match_layer):
        if match_layer.layer["config"]["name"] in self._pools:
            match_layer.input_layers[0].metadata["quantize_config"] = _configs.NoOpQuantizeConfig()
        return match_layer


# TFMOT's ConcatTransform matches a concatenation of 2 to 6 inputs. A wider one kept every input's
# own output quantiser, so the QAT model rounded each input twice (to its own range, then to the
# concatenation's) where the int8 model, whose CONCATENATION takes one scale in and out, rounds
# once: G-GhostNet's stage-3 mix concatenates 10 pooled maps, and op by op a quarter of those
# MEAN outputs sat one step from the QAT model's (`convert.qat_op_fidelity`).
class _WideConcatTransform(_default_transforms.ConcatTransform):
    """TFMOT's ConcatTransform for a concatenation of `inputs` inputs."""

    def __init__(self, inputs):
        self._inputs = inputs

    def pattern(self):
        return _transforms.LayerPattern("Concatenate", inputs=[_transforms.LayerPattern(".*")] * self._inputs)


_TFMOT_CONCAT_INPUTS = 6  # the widest concatenation TFMOT's own layout transforms match


def _wide_concat_inputs(model: keras.Model) -> tuple[int, ...]:
    """Input counts, widest first, of the concatenations wider than TFMOT's transforms match."""
    counts = {len(layer.inbound_nodes[0].inbound_layers) for layer in model.layers
              if isinstance(layer, keras.layers.Concatenate)}
    return tuple(sorted((n for n in counts if n > _TFMOT_CONCAT_INPUTS), reverse=True))


class _ZooLayout(_Q.QuantizeLayoutTransform):
    """A scheme's layout transforms, then `_QuantizeAfterPoolConcat` and `_WideConcatTransform`;
    no activation quantiser on a layer of `concat_feeds` (`_without_activation_quantiser`); the
    registry's config, not TFMOT's no-op, for a layer of `relu_feeds`."""

    def __init__(self, inner, pools, wide_concats, concat_feeds, relu_feeds):
        self._inner, self._pools, self._wide_concats = inner, pools, wide_concats
        self._concat_feeds, self._relu_feeds = concat_feeds, relu_feeds

    def apply(self, model, layer_quantize_map):
        model, layer_quantize_map = self._inner.apply(model, layer_quantize_map)
        for name in self._concat_feeds & set(layer_quantize_map):  # configs TFMOT's ConcatTransform set
            entry = layer_quantize_map[name]
            if entry.get("quantize_config") is not None:
                entry["quantize_config"] = _without_activation_quantiser(entry["quantize_config"])
        for name in self._relu_feeds & set(layer_quantize_map):  # the no-op TFMOT's LayerReLUQuantize set
            if type(layer_quantize_map[name].get("quantize_config")) is _configs.NoOpQuantizeConfig:
                layer_quantize_map[name]["quantize_config"] = None  # quantize_apply asks the registry
        extra = [_WideConcatTransform(n) for n in self._wide_concats]
        if self._pools:
            extra.append(_QuantizeAfterPoolConcat(self._pools))
        transformer = _Q.graph_transformations.model_transformer.ModelTransformer(
            model, extra, set(layer_quantize_map), layer_quantize_map)
        return transformer.transform()


# TFMOT quantises a conv kernel per slice of its last axis. For a DepthwiseConv2D kernel
# (kh, kw, channels, multiplier) that is the multiplier, 1 in every zoo net: one range for the whole
# kernel, which the BatchNorm after it then scales channel by channel. The converter keeps that
# rounding when it folds the BatchNorm in, so a channel whose weights are small next to the largest
# ran on a few int8 levels where TFLite's per-channel DEPTHWISE_CONV_2D gives it 127, in the QAT
# model and in the int8 model alike (mobilenet_v2_100 trained on digits to 79%: 43% after one QAT
# epoch with one range per kernel, 67% with one per channel).
class _DepthwiseKernelQuantizer(_quantizers.LastValueQuantizer):
    """Symmetric 8-bit quantiser of a depthwise kernel with one range per output channel
    (channels x multiplier), as TFLite stores it."""

    def __init__(self):
        super().__init__(num_bits=8, per_axis=True, symmetric=True, narrow_range=True)

    def build(self, tensor_shape, name, layer):
        outputs = int(tensor_shape[-2]) * int(tensor_shape[-1])
        return {f"{end}_var": layer.add_weight(f"{name}_{end}", shape=(outputs,), trainable=False,
                                               initializer=keras.initializers.Constant(value))
                for end, value in (("min", -6.0), ("max", 6.0))}

    def __call__(self, inputs, training, weights, **kwargs):
        # the output channels on the last axis, where the per-axis fake-quant op takes its ranges
        flat = tf.reshape(inputs, (*inputs.shape[:2], 1, -1))
        return tf.reshape(super().__call__(flat, training, weights, **kwargs), inputs.shape)

    def get_config(self):
        return {}


class DepthwiseQuantizeConfig(_registry.Default8BitConvQuantizeConfig):
    """TFMOT's config of a DepthwiseConv2D with the kernel quantised per output channel."""

    def __init__(self, weight_attrs, activation_attrs, quantize_output):
        super().__init__(weight_attrs, activation_attrs, quantize_output)
        self.weight_quantizer = _DepthwiseKernelQuantizer()


# A conv (or Dense) whose only reader is a concatenation: TFMOT quantises its output at its own
# range (the activation quantiser, which its ConcatTransform leaves: "cannot properly handle if the
# FQ was added to the activation"; nor does that transform match where an input of the
# concatenation has other readers, as in every DenseNet block), and the concatenation at its own,
# so the QAT model rounds those values twice. TFLite's int8 CONCATENATION takes one scale in and
# out, and the converter folds the second rounding into the conv, whose int8 output is rounded
# once, to the concatenation's scale: DenseNet-40 trained on digits, op by op, had a fifth of every
# 3x3 conv's outputs a step off the QAT model's (`convert.qat_op_fidelity`). Without the activation
# quantiser the QAT model rounds once, where the int8 model does. The registry below drops it, and
# `_ZooLayout` where TFMOT's transform set the config. (A ReLU or BatchNorm feeding only a
# concatenation keeps its output quantiser: there the int8 model rounds twice as well; dropping it
# took a GhostNet-module toy's logits from 1 to 4 steps off the QAT model's.)
def _feeding_only_a_concat(model: keras.Model) -> frozenset[str]:
    """Names of the layers whose one reader is a Concatenate."""
    return _read_only_by(model, lambda reader: isinstance(reader, keras.layers.Concatenate))


def _read_only_by(model: keras.Model, is_reader, layer_types=None) -> frozenset[str]:
    """Names of the layers (whose class is one of `layer_types`, if given) whose one reader passes `is_reader`."""
    return frozenset(layer.name for layer in model.layers
                     if (layer_types is None or type(layer) in layer_types) and _one_reader_passes(layer, is_reader))


def _one_reader_passes(layer, is_reader) -> bool:
    return len(layer.outbound_nodes) == 1 and is_reader(layer.outbound_nodes[0].outbound_layer)


# TFMOT's LayerReLUQuantize, there to keep a fake-quant op from between an Add and its ReLU, also
# matches a Conv2D, DepthwiseConv2D or Dense whose one reader is a ReLU, and gives it the no-op
# config: rightly no output quantiser (the int8 op fuses the ReLU), but no kernel quantiser either,
# so the QAT model trained float kernels that the int8 model then rounds (the squeeze-excite reduce
# convs of GhostNet and MobileNetV3, MGIAD's restriction convs; a conv-ReLU toy: 8.9% of the int8
# conv's outputs a step off the QAT model's, `convert.qat_op_fidelity`). Those layers get the
# registry's config without its activation quantiser. A BatchNorm QAT runs as a depthwise
# convolution is no such layer: it has no kernel to round (`_config_for`).
_RELU_FOLLOWS = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)


def _is_relu(layer) -> bool:
    return type(layer) is keras.layers.ReLU or (type(layer) is keras.layers.Activation
                                                  and layer.get_config()["activation"] == "relu")


def _feeding_only_a_relu(model: keras.Model) -> frozenset[str]:
    """Names of the convs and Dense layers (TFMOT's own classes) whose one reader is a ReLU."""
    return _read_only_by(model, _is_relu, _RELU_FOLLOWS)


class _ZooRegistry(_Q.QuantizeRegistry):
    """A scheme's registry, with `DepthwiseQuantizeConfig` where it gives a DepthwiseConv2D
    TFMOT's own conv config (a collaborative scheme's configs are left as they are), and no
    activation quantiser for a TFMOT-configured layer of `concat_feeds` or `relu_feeds` (the
    concatenation or ReLU rounds its output, above). A collaborative config of a `relu_feeds`
    layer, whose activation quantiser cannot be taken out, gives way to TFMOT's no-op as before."""

    def __init__(self, inner, concat_feeds=frozenset(), relu_feeds=frozenset()):
        self._inner, self._concat_feeds, self._relu_feeds = inner, concat_feeds, relu_feeds

    def supports(self, layer):
        return self._inner.supports(layer)

    def get_quantize_config(self, layer):
        config = self._inner.get_quantize_config(layer)
        if (type(layer) is keras.layers.DepthwiseConv2D and type(config) is _registry.Default8BitConvQuantizeConfig
                and _channel_ranges_differ(layer.depthwise_kernel.numpy())):
            config = DepthwiseQuantizeConfig(**config.get_config())
        if layer.name in self._relu_feeds and type(config) not in _DEFAULT_CONFIGS:
            return _configs.NoOpQuantizeConfig()
        if layer.name in self._concat_feeds | self._relu_feeds:
            return _without_activation_quantiser(config)
        return config


def _without_activation_quantiser(config):
    """`config` without its activation quantiser, where it is one of TFMOT's default 8-bit configs."""
    if type(config) in _DEFAULT_CONFIGS and config.activation_attrs:
        return type(config)(**{**config.get_config(), "activation_attrs": []})
    return config


_DEFAULT_CONFIGS = (_registry.Default8BitQuantizeConfig, _registry.Default8BitConvQuantizeConfig,
                    DepthwiseQuantizeConfig)


def _channel_ranges_differ(kernel) -> bool:
    """Whether per-channel ranges would differ from one range for `kernel` (kh, kw, C, M).

    Where they do not (DenseNet's frozen all-ones BatchNorm carrier), one range rounds the same and
    the kernel keeps TFMOT's quantiser: per channel, identical carriers became identical constants
    that the converter merged into one, folding every carrier's BatchNorm into it (three such
    carriers: int8 factors 3-54x the BatchNorms'; DenseNet-40's transition ran block 2's factors)."""
    ranges = np.abs(kernel).reshape(-1, kernel.shape[-2] * kernel.shape[-1]).max(axis=0)
    return bool(np.ptp(ranges) > 0)


class _ZooScheme(_Q.QuantizeScheme):
    """`inner` (a TFMOT QuantizeScheme) with the max-pool and wide-concatenation fixes in its
    layout transforms, the per-channel depthwise kernels in its registry, and no activation
    quantiser on a conv feeding only a concatenation (`concat_feeds`) in both; a kernel quantiser
    (and no activation quantiser) on a layer feeding only a ReLU (`relu_feeds`)."""

    def __init__(self, inner, pools, wide_concats=(), concat_feeds=frozenset(), relu_feeds=frozenset()):
        self._inner, self._pools, self._wide_concats = inner, pools, wide_concats
        self._concat_feeds, self._relu_feeds = concat_feeds, relu_feeds

    def get_layout_transformer(self):
        inner = self._inner.get_layout_transformer()
        if self._pools or self._wide_concats or self._concat_feeds or self._relu_feeds:
            return _ZooLayout(inner, self._pools, self._wide_concats, self._concat_feeds, self._relu_feeds)
        return inner

    def get_quantize_registry(self):
        return _ZooRegistry(self._inner.get_quantize_registry(), self._concat_feeds, self._relu_feeds)


def _annotate(layer):
    config = _config_for(layer)  # decided on the original layer, whose inbound nodes say where it sits
    if _runs_as_depthwise(layer):
        layer = _as_depthwise_batchnorm(layer)
    return _Q.quantize_annotate_layer(layer, config)


def quantize_model(model: keras.Model, scheme=None, calibration=None) -> keras.Model:
    """TFMOT 8-bit QAT model of `model` (same as `tfmot...quantize_model` where every layer is in
    TFMOT's registry; the zoo's extra layers are annotated with the configs above).

    `scheme`: a TFMOT QuantizeScheme for the layers TFMOT's registry knows; None is the default
    8-bit scheme. The collaborative schemes (sparsity- or cluster-preserving QAT) go here, see
    `pipelines.prune.clustering`.
    `calibration`: images (a batch array) to start every activation range from, as post-training
    quantisation sets them (`calibrate_ranges`); None keeps TFMOT's start, [-6, 6] everywhere."""
    if not isinstance(model, keras.Model) or not getattr(model, "_is_graph_network", False):
        raise TypeError(f"quantize_model needs a functional tf_keras Model, got {type(model).__name__}")
    unsupported = [layer.name for layer in model.layers if isinstance(layer, keras.layers.Lambda)]
    if unsupported:
        raise ValueError(f"Lambda layers cannot be quantised ({', '.join(unsupported)}); "
                         "replace them with serialisable layers")
    # The wrappers hold the original layer objects, so the weights carry over (as in TFMOT).
    annotated = keras.models.clone_model(model, clone_function=_annotate)
    scheme = _ZooScheme(scheme or _Q.default_8bit.Default8BitQuantizeScheme(), _pools_feeding_concat(model),
                        _wide_concat_inputs(model), _feeding_only_a_concat(model), _feeding_only_a_relu(model))
    with _zoo_scope():
        applied = _Q.quantize_apply(annotated, scheme)
    _set_weight_ranges(applied)
    if calibration is not None:
        calibrate_ranges(applied, model, calibration)
    return _save_by_name(applied)


def _set_weight_ranges(qat: keras.Model) -> None:
    """Sets every weight quantiser's range to its weight's, as its first training step would.

    TFMOT starts them at [-6, 6] and takes the weights' range only in a training step, so a QAT
    model evaluated or converted before any training ran on weights rounded to steps of 12/254
    (mobilenet_v2_100 trained on digits to 79%: 14.5% top-1 as a QAT model before its first step)."""
    for layer in qat.layers:
        for weight, quantizer, variables in getattr(layer, "_weight_vars", ()):
            quantizer(weight, True, variables)


# TFMOT starts every activation range at [-6, 6] and moves it by an EMA with decay 0.999, so a short
# fine-tune leaves a tensor whose values span [0, 0.5] with most of its 256 levels outside them
# (GhostNet after 8 steps on digits: every output scale still within 1% of 12/255).
# The range variables of a layer's output in its QAT wrapper (kernel ranges are left alone).
_RANGE_PREFIXES = ("output", "post_activation")
_RANGE_NAMES = tuple(f"{prefix}_{end}" for prefix in _RANGE_PREFIXES for end in ("min", "max"))


def activation_ranges(qat: keras.Model) -> dict[str, tuple[float, float]]:
    """The activation ranges of a QAT model made by `quantize_model`: {layer name: (min, max)} of
    each quantised output (the QAT layer's name, `quant_<layer>`) and of the model's input (its
    QuantizeLayer); weight ranges are not included."""
    return {name: (float(low.numpy()), float(high.numpy()))
            for name, (low, high) in _activation_range_variables(qat).items()}


def _activation_range_variables(qat: keras.Model) -> dict[str, tuple[tf.Variable, tf.Variable]]:
    """{layer name: (min variable, max variable)} of each range `activation_ranges` reads."""
    ranges = {}
    for layer in qat.layers:
        # scalar variables only: a per-channel kernel range is a vector
        scalars = {_variable_key(v): v for v in layer.weights if not v.shape.rank}
        # the input QuantizeLayer names its range after itself; a wrapper, after what it quantises
        prefixes = [layer.name] if isinstance(layer, _quantize_layer.QuantizeLayer) else _RANGE_PREFIXES
        for prefix in prefixes:
            if f"{prefix}_min" in scalars:
                ranges[layer.name] = (scalars[f"{prefix}_min"], scalars[f"{prefix}_max"])
    return ranges


# TensorFlow's fake quantisation and the TFLite converter each round a range's zero point
# (-min / step on the 256-value grid) to an integer, each in its own float arithmetic, so where it
# falls on a half step they can round it apart and the int8 model's grid sits a step off the QAT
# model's. The input range of images normalised to [-1, 1] always does (zero point 127.5): the QAT
# model took white pixels 128 steps above its zero point (1.0039), the converted model could go
# no further than 127 (0.9961).
ZERO_POINT_TIE = 1e-3  # of a step from a half: a zero point the two may round apart


@contextlib.contextmanager
def zero_points_settled(qat: keras.Model):
    """While `qat` is converted, each activation range whose zero point is within ZERO_POINT_TIE of
    a half step holds the ends TensorFlow's fake quantisation nudges it to: the same grid, so the
    QAT model computes exactly what it did, with an integer zero point the converter cannot round
    another way. The ranges are restored afterwards."""
    saved = []
    for low, high in _activation_range_variables(qat).values():
        start, end = float(low.numpy()), float(high.numpy())
        if end <= start or abs(-start / ((end - start) / 255) % 1 - 0.5) >= ZERO_POINT_TIE:
            continue
        beyond = tf.constant([start - 1 - abs(start), end + 1 + abs(end)])  # clamped to the nudged ends
        nudged = tf.quantization.fake_quant_with_min_max_vars(beyond, start, end).numpy()
        saved.append((low, high, start, end))
        low.assign(nudged[0])
        high.assign(nudged[1])
    try:
        yield
    finally:
        for low, high, start, end in saved:
            low.assign(start)
            high.assign(end)


def calibrate_ranges(qat: keras.Model, model: keras.Model, images) -> int:
    """Sets the activation ranges of `qat` (made by `quantize_model(model)`) to the min/max that
    `model`'s own layers reach on `images` (widened to contain 0, as TFLite needs), as
    post-training quantisation would; returns how many ranges were set. Weight ranges are not
    touched (`quantize_model` sets them from the weights, and TFMOT at every training step)."""
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != len(model.input_shape) or images.shape[1:] != tuple(model.input_shape[1:]):
        raise ValueError(f"`images` must be a batch of shape (N, {', '.join(map(str, model.input_shape[1:]))}) "
                         f"for this model, got {images.shape}")
    wrapped = {layer.layer.name: layer for layer in qat.layers if hasattr(layer, "layer")}
    names = [layer.name for layer in model.layers if layer.name in wrapped]
    probe = keras.Model(model.input, [model.get_layer(name).output for name in names])
    values = probe.predict(images, verbose=0, batch_size=64)
    values = values if isinstance(values, list) else [values]
    ranges = {name: (min(float(v.min()), 0.0), max(float(v.max()), 0.0)) for name, v in zip(names, values)}
    image_range = (min(float(images.min()), 0.0), max(float(images.max()), 0.0))
    count = 0
    for layer in qat.layers:
        if isinstance(layer, _quantize_layer.QuantizeLayer):  # the model's input
            keys, value_range = None, image_range
        elif getattr(getattr(layer, "layer", None), "name", None) in ranges:
            keys, value_range = _RANGE_NAMES, ranges[layer.layer.name]
        else:
            continue
        for variable in layer.weights:
            key = _variable_key(variable)
            if key.endswith(("_min", "_max")) and (keys is None or key in keys):
                variable.assign(value_range[key.endswith("_max")])
                count += key.endswith("_max")
    return count
