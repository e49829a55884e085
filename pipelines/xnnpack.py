"""Lower a .tflite so XNNPACK (LiteRT's default CPU path on phones and Linux boards) runs all of it, fast.

Two rewrites, each computing what the model computed:

1. Float islands (int8 models). XNNPACK has no int8 kernel for a few ops the zoo's int8 graphs
   hold (hard-swish, average pooling, softmax, a ReLU that requantises, the uint8 <-> int8
   conversion at an app model's input and output): LiteRT leaves each to TFLite's own kernels,
   which splits the graph into pieces with a handoff between them and runs those ops on generic
   code; in mobilenet_v3_small_100 that made int8 ~2x slower than fp32. XNNPACK takes the float
   form of each, and int8 <-> float conversions, so every such op becomes DEQUANTIZE -> the op in
   float -> QUANTIZE to the op's own output scale (a requantising QUANTIZE: DEQUANTIZE ->
   QUANTIZE). An island computes what the int8 kernel approximates (the op on the dequantised
   input, rounded once to the same output grid), so outputs stay within TFLite's own
   kernel-to-kernel rounding differences.
2. Depthwise multipliers (any model). XNNPACK's depthwise kernels with a channel multiplier m > 1
   (EffCNet/CondenseNeXt) are several times slower than with m = 1 (four 3x3 32 -> 64 layers,
   each followed by a 1x1 conv, at 32x32: int8 1.14 ms, fp32 0.85 ms; rewritten, 0.20 and 0.28 ms;
   LiteRT, 1 thread, AVX-512 VNNI). The op becomes a CONCATENATION of
   m copies of its input and a depthwise convolution with m = 1 whose channels are ordered
   copy-major; the convolutions that read it take their input channels in that order. Exact:
   every output channel keeps its weights, bias and scale.

Only for CPUs that run XNNPACK: a microcontroller or NPU wants the plain graph (TFLite Micro and
Vela run these ops in int8), so the export keeps that one as `<name>.tflite` and lowers the app
model (`<name>_app.tflite`).
"""
from __future__ import annotations

import copy

import numpy as np

# int8 ops XNNPACK's delegate leaves to TFLite's kernels whose float32 form it takes (LiteRT as
# pinned). tests/test_xnnpack.py runs one variant of every family through XNNPACK to keep it whole.
FLOAT_ISLAND_OPS = ("HARD_SWISH", "AVERAGE_POOL_2D", "SOFTMAX", "RELU")


def lower_for_xnnpack(tflite: bytes) -> bytes:
    """`tflite` rewritten as the module doc says; a model with nothing to rewrite comes back unchanged."""
    from kerasnets.pipelines import tflite_file

    tflite_file.read_tflite(tflite, source="`tflite`")  # a clear error for bytes that are no model
    model = tflite_file.unpack(tflite)
    changed = False
    for graph in model.subgraphs:
        changed |= _split_depth_multipliers(model, graph)
        changed |= _float_islands(model, graph)
    return tflite_file.pack(model) if changed else bytes(tflite)


def _schema():
    from tensorflow.lite.python import schema_py_generated as schema

    return schema


def _builtin(model, op) -> int:
    code = model.operatorCodes[op.opcodeIndex]
    return max(code.builtinCode, code.deprecatedBuiltinCode)  # the deprecated field holds codes < 127


# 1. float islands

def _float_islands(model, graph) -> bool:
    schema = _schema()
    islands = {getattr(schema.BuiltinOperator, name) for name in FLOAT_ISLAND_OPS}
    integers = {schema.TensorType.INT8, schema.TensorType.UINT8}
    operators, changed = [], False
    for op in graph.operators:
        builtin = _builtin(model, op)
        source, target = graph.tensors[op.inputs[0]].type, graph.tensors[op.outputs[0]].type
        if builtin in islands and source == schema.TensorType.INT8:
            operators += _float_island(model, graph, op)
        elif builtin == schema.BuiltinOperator.QUANTIZE and {source, target} == integers:  # not int8 -> int8
            operators += _through_float(model, graph, op)
        else:
            operators.append(op)
            continue
        changed = True
    graph.operators = operators
    return changed


def _through_float(model, graph, op) -> list:
    """[DEQUANTIZE, QUANTIZE] in place of a requantising QUANTIZE (uint8 <-> int8)."""
    schema = _schema()
    middle = _float_twin(model, graph, op.inputs[0])
    # int8 input: DEQUANTIZE version 2; float -> int8: QUANTIZE version 1 (TFLite's op versioning)
    return [_operator(model, schema.BuiltinOperator.DEQUANTIZE, 2, [op.inputs[0]], [middle]),
            _operator(model, schema.BuiltinOperator.QUANTIZE, 1, [middle], list(op.outputs))]


def _float_island(model, graph, op) -> list:
    """[DEQUANTIZE, op on float tensors, QUANTIZE]: the op's int8 input and output tensors stay
    where they are (other ops and the graph's signature refer to them by index)."""
    schema = _schema()
    float_in, float_out = _float_twin(model, graph, op.inputs[0]), _float_twin(model, graph, op.outputs[0])
    dequantize = _operator(model, schema.BuiltinOperator.DEQUANTIZE, 2, [op.inputs[0]], [float_in])
    quantize = _operator(model, schema.BuiltinOperator.QUANTIZE, 1, [float_out], [op.outputs[0]])
    op.inputs = [float_in, *op.inputs[1:]]
    op.outputs = [float_out]
    return [dequantize, op, quantize]


def _float_twin(model, graph, index: int) -> int:
    """A new float32 activation tensor shaped as tensor `index`; returns its index."""
    twin = _new_tensor(model, graph, index, b"/float")
    graph.tensors[twin].type, graph.tensors[twin].quantization = _schema().TensorType.FLOAT32, None
    return twin


# 2. depthwise multipliers

def _split_depth_multipliers(model, graph) -> bool:
    operators, changed = [], False
    for op in graph.operators:
        multiplier = _depth_multiplier(model, graph, op)
        readers = _readers(model, graph, op.outputs[0]) if multiplier > 1 else None
        constants = [t for t in op.inputs[1:] if t >= 0] + [reader.inputs[1] for reader in readers or []]
        if readers is not None and all(_reorderable(model, graph, t) for t in constants):
            operators += _copies_then_depthwise(model, graph, op, multiplier, readers)
            changed = True
        else:
            operators.append(op)
    graph.operators = operators
    return changed


def _depth_multiplier(model, graph, op) -> int:
    if _builtin(model, op) != _schema().BuiltinOperator.DEPTHWISE_CONV_2D:
        return 1
    return graph.tensors[op.outputs[0]].shape[-1] // graph.tensors[op.inputs[0]].shape[-1]


_REORDERABLE_TYPES = ("int8", "int32", "float32")


def _reorderable(model, graph, index: int) -> bool:
    """A constant held in the file, of a type the rewrite reorders (not, e.g., float16 weights
    behind a DEQUANTIZE op, whose float tensor is computed)."""
    from kerasnets.pipelines import tflite_file

    tensor = graph.tensors[index]
    data = model.buffers[tensor.buffer].data
    return data is not None and len(data) > 0 and tflite_file.type_name(tensor.type) in _REORDERABLE_TYPES


def _readers(model, graph, tensor: int):
    """The CONV_2D ops that read `tensor` as their input (their filters can take its channels in
    another order); None when anything else reads it or it is a graph output."""
    if tensor in graph.outputs:
        return None
    readers = [op for op in graph.operators if tensor in op.inputs]
    conv = _schema().BuiltinOperator.CONV_2D
    channels = graph.tensors[tensor].shape[-1]
    if not readers or any(_builtin(model, op) != conv or op.inputs[0] != tensor or tensor in op.inputs[1:]
                          or graph.tensors[op.inputs[1]].shape[-1] != channels for op in readers):
        return None
    return readers


def _copies_then_depthwise(model, graph, op, multiplier: int, readers) -> list:
    schema = _schema()
    channels = graph.tensors[op.inputs[0]].shape[-1]
    # copy-major channel j = k * channels + c is the depthwise's old channel c * multiplier + k
    order = np.array([c * multiplier + k for k in range(multiplier) for c in range(channels)])
    copies = _new_tensor(model, graph, op.inputs[0], b"/copies")  # the input, m times the channels
    for field in ("shape", "shapeSignature"):
        dims = getattr(graph.tensors[copies], field)
        if dims is not None and len(dims):
            dims = list(dims)
            dims[-1] *= multiplier
            setattr(graph.tensors[copies], field, dims)
    version = 2 if graph.tensors[copies].type == schema.TensorType.INT8 else 1  # TFLite's op versioning
    concat = _operator(model, schema.BuiltinOperator.CONCATENATION, version, [op.inputs[0]] * multiplier, [copies])
    concat.builtinOptionsType = schema.BuiltinOptions.ConcatenationOptions
    concat.builtinOptions = schema.ConcatenationOptionsT()
    concat.builtinOptions.axis = 3
    op.inputs = [copies, *op.inputs[1:]]
    op.builtinOptions.depthMultiplier = 1
    for position in range(1, len(op.inputs)):  # filter (1, h, w, C*m), bias (C*m): reorder last axis
        if op.inputs[position] >= 0:
            op.inputs[position] = _reordered_constant(model, graph, op.inputs[position], order)
    for reader in readers:  # filters (O, h, w, C*m): take the input channels copy-major too
        reader.inputs = list(reader.inputs)  # read from the file as a read-only array
        reader.inputs[1] = _reordered_constant(model, graph, reader.inputs[1], order, per_channel=False)
    return [concat, op]


def _reordered_constant(model, graph, index: int, order, *, per_channel: bool = True) -> int:
    """Constant tensor `index` with its last axis in `order` (and, where its quantisation is per
    output channel along that axis, the scales too): in place, or as a copy when another op or
    tensor shares it; returns the index of the one to read."""
    from kerasnets.pipelines import tflite_file

    tensor = graph.tensors[index]
    dtype = np.dtype(tflite_file.type_name(tensor.type))
    values = np.frombuffer(bytes(bytearray(model.buffers[tensor.buffer].data)), dtype).reshape(tensor.shape)
    shared = sum(list(op.inputs).count(index) for op in graph.operators) > 1 or \
        sum(t.buffer == tensor.buffer for t in graph.tensors) > 1
    twin = _new_tensor(model, graph, index, b"/reordered") if shared else index
    model.buffers[graph.tensors[twin].buffer].data = np.ascontiguousarray(values[..., order]).view(np.uint8).ravel()
    quant = graph.tensors[twin].quantization
    if per_channel and quant is not None and quant.scale is not None and len(quant.scale) == len(order):
        quant.scale = np.asarray(quant.scale)[order].tolist()
        quant.zeroPoint = np.asarray(quant.zeroPoint)[order].tolist()
    return twin


# shared

def _new_tensor(model, graph, index: int, suffix: bytes) -> int:
    """A copy of tensor `index` with an empty buffer of its own (to fill or leave for activations)."""
    twin = copy.deepcopy(graph.tensors[index])
    twin.name = (twin.name or b"") + suffix
    model.buffers.append(_schema().BufferT())
    twin.buffer = len(model.buffers) - 1
    graph.tensors.append(twin)
    return len(graph.tensors) - 1


def _operator(model, builtin: int, version: int, inputs, outputs):
    op = _schema().OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = _opcode_index(model, builtin, version), list(inputs), list(outputs)
    return op


def _opcode_index(model, builtin: int, version: int) -> int:
    for index, code in enumerate(model.operatorCodes):
        if max(code.builtinCode, code.deprecatedBuiltinCode) == builtin:
            code.version = max(code.version, version)
            return index
    code = _schema().OperatorCodeT()
    code.builtinCode, code.deprecatedBuiltinCode, code.version = builtin, min(builtin, 127), version
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1
