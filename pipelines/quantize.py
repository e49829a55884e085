"""Quantisation-aware training: TFMOT's 8-bit QAT, with QuantizeConfigs for the zoo's layers
that TFMOT's default registry does not know (Multiply in squeeze-excite, hard activations,
channel slices, BatchNorm that follows no conv)."""
from __future__ import annotations

import tensorflow_model_optimization as tfmot
import tf_keras as keras

_Q = tfmot.quantization.keras
_quantizers = _Q.quantizers


class LayerQuantizeConfig(_Q.QuantizeConfig):
    """8-bit QAT for a zoo layer: named weights get per-channel symmetric quantisers (as TFLite's
    int8 conv kernels), the output an 8-bit moving-average quantiser unless it only moves values."""

    def __init__(self, weights=(), quantize_output=True):
        self.weights = tuple(weights)
        self.quantize_output = bool(quantize_output)

    def get_weights_and_quantizers(self, layer):
        quantizer = _quantizers.LastValueQuantizer(num_bits=8, per_axis=True, symmetric=True,
                                                   narrow_range=True)
        return [(getattr(layer, name), quantizer) for name in self.weights]

    def get_activations_and_quantizers(self, layer):
        return []

    def set_quantize_weights(self, layer, quantize_weights):
        for name, weight in zip(self.weights, quantize_weights):
            setattr(layer, name, weight)

    def set_quantize_activations(self, layer, quantize_activations):
        pass

    def get_output_quantizers(self, layer):
        if not self.quantize_output:
            return []
        return [_quantizers.MovingAverageQuantizer(num_bits=8, per_axis=False, symmetric=False,
                                                   narrow_range=False)]

    def get_config(self):
        return {"weights": list(self.weights), "quantize_output": self.quantize_output}


# Keras layers TFMOT's registry lacks. Zoo layers instead declare `qat_spec = (weight attribute
# names, quantize_output)` as plain data, so the zoo itself never imports TFMOT.
_SPEC_FOR_KERAS_LAYER = {keras.layers.Multiply: ((), True)}


_FOLDS_BATCHNORM = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)


def _is_standalone_batchnorm(layer) -> bool:
    """A BatchNorm TFMOT cannot fold into the conv before it (pre-activation nets: BN-ReLU-Conv);
    TFLite runs it as an int8 MUL + ADD, so it gets an output quantiser like any other op."""
    if type(layer) is not keras.layers.BatchNormalization:
        return False
    source = layer.inbound_nodes[0].inbound_layers
    return not (isinstance(source, _FOLDS_BATCHNORM) and len(source.outbound_nodes) == 1)


def _config_for(layer):
    if _is_standalone_batchnorm(layer):
        return LayerQuantizeConfig((), True)
    spec = _SPEC_FOR_KERAS_LAYER.get(type(layer), getattr(layer, "qat_spec", None))
    return None if spec is None else LayerQuantizeConfig(*spec)


def quantize_scope():
    """Scope that deserialises QAT models holding the zoo's layers and configs."""
    return _Q.quantize_scope({**keras.saving.get_custom_objects(),
                              "LayerQuantizeConfig": LayerQuantizeConfig})


def _annotate(layer):
    return _Q.quantize_annotate_layer(layer, _config_for(layer))


def quantize_model(model: keras.Model, scheme=None) -> keras.Model:
    """TFMOT 8-bit QAT model of `model` (same as `tfmot...quantize_model` where every layer is in
    TFMOT's registry; the zoo's extra layers are annotated with the configs above).

    `scheme`: a TFMOT QuantizeScheme for the layers TFMOT's registry knows; None is the default
    8-bit scheme. The collaborative schemes (sparsity- or cluster-preserving QAT) go here, see
    `pipelines.prune.clustering`."""
    if not isinstance(model, keras.Model) or not getattr(model, "_is_graph_network", False):
        raise TypeError(f"quantize_model needs a functional tf_keras Model, got {type(model).__name__}")
    unsupported = [layer.name for layer in model.layers if isinstance(layer, keras.layers.Lambda)]
    if unsupported:
        raise ValueError(f"Lambda layers cannot be quantised ({', '.join(unsupported)}); "
                         "replace them with serialisable layers")
    # The wrappers hold the original layer objects, so the weights carry over (as in TFMOT).
    annotated = keras.models.clone_model(model, clone_function=_annotate)
    with quantize_scope():
        if scheme is None:
            return _Q.quantize_apply(annotated)
        return _Q.quantize_apply(annotated, scheme)
