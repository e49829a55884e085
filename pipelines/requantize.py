"""Exact int8 requantisation: an int8 -> int8 QUANTIZE op of a converted model rewritten as the
1x1 DEPTHWISE_CONV_2D that computes the same requantisation rounded once.

TFLite's int8 QUANTIZE kernel (reference kernels, and TFLite Micro's, which match them bit for
bit) requantises q to round((q - z_in) * M) + z_out with M = s_in / s_out held as m * 2^e
(0.5 <= m < 1): it rounds (q - z_in) * m to an integer, then divides by 2^-e and rounds again. The
first rounding keeps no fraction of the input integer, so for M < 0.5 the value passes through a
grid of 2^e output steps: at 0.25 <= M < 0.5 every value a quarter step or less below a half step
rounds up, a quarter of all values one step off the exact requantisation. The converter writes
such an op wherever a tensor read elsewhere enters a concatenation of a wider range (every dense
block of CondenseNet: condensenet50_cifar's converted QAT model agreed with its QAT model on 88.5%
of the test's digits, 99.0% with the rewrite). A depthwise convolution with weight 127 at scale
1/127 computes the same value, but its multiplier M / 127 leaves seven more bits to the first
rounding: outputs within 1/256 step of the exact requantisation, at the cost of a QUANTIZE.

A QUANTIZE whose M >= 0.5 rounds once already (e >= 0) and is left as it is, as are those whose
tensors are not 4-D (a depthwise convolution wants NHWC) or not quantised per tensor.
"""
from __future__ import annotations

import numpy as np

from kerasnets.pipelines import tflite_file

COARSE_BELOW = 0.5  # requantisation multipliers under this round through a coarse grid
_WEIGHT = 127  # the int8 weight of the depthwise rewrite, at scale 1 / _WEIGHT
REQUANTISED_SUFFIX = "/requantise"  # names the rewrite's weights and bias: its input's name and this


def requantise_exactly(tflite: bytes) -> bytes:
    """`tflite` with each coarse int8 -> int8 QUANTIZE (above) rewritten as a 1x1 depthwise
    convolution; a model with none comes back unchanged."""
    schema = tflite_file.schema
    model = tflite_file.unpack(tflite)
    changed = False
    for graph in model.subgraphs:
        operators = []
        for op in graph.operators:
            if _coarse_requantisation(model, graph, op, schema):
                operators.append(_as_depthwise(model, graph, op, schema))
                changed = True
            else:
                operators.append(op)
        graph.operators = operators
    return tflite_file.pack(model) if changed else bytes(tflite)


def _per_tensor_scale(tensor) -> float | None:
    quant = tensor.quantization
    if quant is None or quant.scale is None or len(quant.scale) != 1:
        return None
    return float(quant.scale[0])


def _coarse_requantisation(model, graph, op, schema) -> bool:
    if tflite_file.builtin_code(model, op) != schema.BuiltinOperator.QUANTIZE:
        return False
    source, target = graph.tensors[op.inputs[0]], graph.tensors[op.outputs[0]]
    if source.type != schema.TensorType.INT8 or target.type != schema.TensorType.INT8 or len(source.shape) != 4:
        return False
    scales = _per_tensor_scale(source), _per_tensor_scale(target)
    return None not in scales and scales[0] / scales[1] < COARSE_BELOW


def _as_depthwise(model, graph, op, schema):
    """The DEPTHWISE_CONV_2D (1x1, weight 127 at scale 1/127 per channel, zero bias) from the
    QUANTIZE's input to its output."""
    source = op.inputs[0]
    channels = int(graph.tensors[source].shape[-1])
    weights = tflite_file.per_channel_constant(model, graph, source, np.full((1, 1, 1, channels), _WEIGHT, np.int8),
                                               schema.TensorType.INT8, 1.0 / _WEIGHT, axis=3,
                                               suffix=REQUANTISED_SUFFIX.encode())
    bias = tflite_file.per_channel_constant(model, graph, source, np.zeros(channels, np.int32), schema.TensorType.INT32,
                                            _per_tensor_scale(graph.tensors[source]) / _WEIGHT,  # input x weight scale
                                            suffix=REQUANTISED_SUFFIX.encode())
    depthwise = tflite_file.new_operator(model, schema.BuiltinOperator.DEPTHWISE_CONV_2D, 3,  # per-channel: version 3
                                         [source, weights, bias], [op.outputs[0]])
    depthwise.builtinOptionsType = schema.BuiltinOptions.DepthwiseConv2DOptions
    options = schema.DepthwiseConv2DOptionsT()
    options.padding, options.strideH, options.strideW, options.depthMultiplier = schema.Padding.SAME, 1, 1, 1
    options.dilationHFactor = options.dilationWFactor = 1
    options.fusedActivationFunction = schema.ActivationFunctionType.NONE
    depthwise.builtinOptions = options
    return depthwise

