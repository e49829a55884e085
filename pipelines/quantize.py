"""Quantisation-aware training: TFMOT's 8-bit QAT, with QuantizeConfigs for the zoo's layers
that TFMOT's default registry does not know (Multiply in squeeze-excite, hard activations,
channel slices)."""
from __future__ import annotations

import tensorflow_model_optimization as tfmot
import tf_keras as keras

from kerasnets import layers as knl

_Q = tfmot.quantization.keras
_quantizers = _Q.quantizers


class OutputQuantizeConfig(_Q.QuantizeConfig):
    """No weights; the output gets an 8-bit moving-average quantiser (as TFLite's int8 op will)."""

    def get_weights_and_quantizers(self, layer):
        return []

    def get_activations_and_quantizers(self, layer):
        return []

    def set_quantize_weights(self, layer, quantize_weights):
        pass

    def set_quantize_activations(self, layer, quantize_activations):
        pass

    def get_output_quantizers(self, layer):
        return [_quantizers.MovingAverageQuantizer(num_bits=8, per_axis=False, symmetric=False,
                                                   narrow_range=False)]

    def get_config(self):
        return {}


class PassThroughQuantizeConfig(OutputQuantizeConfig):
    """Layers that only move values (slices) keep their input's scale: no new quantiser."""

    def get_output_quantizers(self, layer):
        return []


_CONFIG_FOR_LAYER = {
    keras.layers.Multiply: OutputQuantizeConfig,
    knl.HardSwish: OutputQuantizeConfig,
    knl.HardSigmoid: OutputQuantizeConfig,
    knl.ChannelSlice: PassThroughQuantizeConfig,
}


def quantize_scope():
    """Scope that deserialises QAT models holding the zoo's layers and configs."""
    return _Q.quantize_scope({**knl.CUSTOM_OBJECTS, "OutputQuantizeConfig": OutputQuantizeConfig,
                              "PassThroughQuantizeConfig": PassThroughQuantizeConfig})


def _annotate(layer):
    config_cls = _CONFIG_FOR_LAYER.get(type(layer))
    return _Q.quantize_annotate_layer(layer, config_cls() if config_cls else None)


def quantize_model(model: keras.Model) -> keras.Model:
    """TFMOT 8-bit QAT model of `model` (same as `tfmot...quantize_model` where every layer is in
    TFMOT's registry; the zoo's extra layers are annotated with the configs above)."""
    if not isinstance(model, keras.Model) or not getattr(model, "_is_graph_network", False):
        raise TypeError(f"quantize_model needs a functional tf_keras Model, got {type(model).__name__}")
    unsupported = [layer.name for layer in model.layers if isinstance(layer, keras.layers.Lambda)]
    if unsupported:
        raise ValueError(f"Lambda layers cannot be quantised ({', '.join(unsupported)}); "
                         "replace them with serialisable layers")
    # The wrappers hold the original layer objects, so the weights carry over (as in TFMOT).
    annotated = keras.models.clone_model(model, clone_function=_annotate)
    with quantize_scope():
        return _Q.quantize_apply(annotated)
