"""Lower a .tflite so XNNPACK (LiteRT's default CPU path on phones and Linux boards) runs all of it, fast.

Four rewrites, each computing what the model computed:

1. Float islands (int8 models). XNNPACK has no int8 kernel for a few ops the zoo's int8 graphs
   hold (hard-swish, average pooling, softmax, a ReLU that requantises, the uint8 <-> int8
   conversion at an app model's input and output): LiteRT leaves each to TFLite's own kernels,
   which splits the graph into pieces with a handoff between them and runs those ops on generic
   code; in mobilenet_v3_small_100 that made int8 ~2x slower than fp32. XNNPACK takes the float
   form of each, and int8 <-> float conversions, so every such op becomes DEQUANTIZE -> the op in
   float -> QUANTIZE to the op's own output scale (a requantising QUANTIZE: DEQUANTIZE ->
   QUANTIZE). An island computes what the int8 kernel approximates (the op on the dequantised
   input, rounded once to the same output grid), so outputs stay within TFLite's own
   kernel-to-kernel rounding differences. A channel shuffle's TRANSPOSE (blocks of under 256
   elements; up to 48 channels the whole shuffle becomes a convolution, 4.) becomes an island too,
   for speed: XNNPACK's int8 transpose moves such small blocks slower than its float one does
   with the two conversions (shufflenetv2_050: int8 1.49x -> 1.59x faster than fp32), and an
   island of a transpose is exact (each value dequantised and quantised back to its own integer).
2. Depthwise multipliers (any model). XNNPACK's depthwise kernels with a channel multiplier m > 1
   (EffCNet/CondenseNeXt) are several times slower than with m = 1 (four 3x3 32 -> 64 layers,
   each followed by a 1x1 conv, at 32x32: int8 1.14 ms, fp32 0.85 ms; rewritten, 0.20 and 0.28 ms;
   LiteRT, 1 thread, AVX-512 VNNI). The op becomes a CONCATENATION of
   m copies of its input and a depthwise convolution with m = 1 whose channels are ordered
   copy-major; the convolutions that read it take their input channels in that order. Exact:
   every output channel keeps its weights, bias and scale.
3. Narrow int8 convolutions (int8 models). XNNPACK's int8 kernels compute 16 output channels per
   step and pay a fixed cost per output pixel, so a stride-1 convolution with few channels on a
   large map costs what one with 16 does (a 3x3 depthwise at 112x112: ~105 us for 4, 8 or 16
   channels; LiteRT, 1 thread, AVX-512 VNNI). Such an op (a 1x1 CONV_2D, or a SAME-padded stride-1
   DEPTHWISE_CONV_2D, with C < 16 output channels) runs on its input reshaped to (1, H, W/k, k*C)
   (the same bytes: k neighbouring columns side by side in the channels) as one CONV_2D that
   computes the k columns at once (block-diagonal for a 1x1; for a depthwise kernel, each column's
   taps within its group and the neighbouring groups' edge columns), with the largest k that
   divides W and keeps k*C <= 16: a 4-channel 3x3 depthwise at 112x112 takes 42 us instead of
   106, a 1x1 8 -> 4 conv 18 instead of 37. Exact: every output keeps its weights, bias, scale and
   int32 sum (the added weights are 0; SAME padding reads zeros either way). int8 only: XNNPACK's
   fp32 kernels get slower from it (150 us instead of 117 for the depthwise above).
4. Channel shuffles of up to 48 channels (int8 models). A ShuffleNet shuffle (RESHAPE splitting
   the channels into groups, TRANSPOSE of the last two axes, RESHAPE back) moves bytes in three
   ops (five with the TRANSPOSE as a float island, 1.); XNNPACK's int8 1x1 convolution does the
   same permutation in one (the filter a permutation matrix of 1s at scale 1, a zero bias, input
   and output quantised alike, so every output is its input's integer, as the copies made it).
   In context (benchmarks/int8_ops.py; LiteRT, 1 thread, AVX-512 VNNI): at 56x56x24 25 us
   instead of 60 as an island, at 16x16x48 4.3 instead of 6.7; at 64 channels the two are level
   (16x16x64: 6.9-8.2 against 7.5-8.5 across runs) and at 96 the island is the faster (8x8x96:
   3.1 against 3.7; 14x14x96: 9.4 against 10.3), so wider shuffles stay islands. The whole
   models: augshufflenet_050_cifar 1.48x -> 1.54x faster than fp32, shufflenetv2_050_cifar 1.60x
   -> 1.68x, shufflenet_050_g4 1.55x -> 1.62x. int8 only: a float model keeps its shuffles,
   XNNPACK's fp32 convolution being the slower at the zoo's sizes (16x16x48: 10.2 us against 5.6).

Rewrites 3. and 4. pay only on CPUs with int8 dot products. On one with AVX2 only (x86_64 AMD EPYC,
no VNNI; benchmarks/int8_ops.py, LiteRT, 1 thread), the packed 3x3 depthwise at 112x112 took 204 us
for 4 channels and 414 for 8 against 113 and 109 unpacked, and the 16x16x48 shuffle convolution 18.7
us against 10.3 as an island; whole models lost with them (ghost_resnet56_cifar int8 2.08 -> 2.55
ms, ghostnet_050 3.35 -> 3.67). `lower_for_xnnpack(..., int8_dot_product=False)` leaves them out.

Only for CPUs that run XNNPACK: a microcontroller or NPU wants the plain graph (TFLite Micro and
Vela run these ops in int8), so the export keeps that one as `<name>.tflite` and lowers the app
model (`<name>_app.tflite`).
"""
from __future__ import annotations

import itertools

import numpy as np

from kerasnets.pipelines import tflite_file

# int8 ops XNNPACK's delegate leaves to TFLite's kernels whose float32 form it takes (LiteRT as
# pinned). tests/test_xnnpack.py runs one variant of every family through XNNPACK to keep it whole.
FLOAT_ISLAND_OPS = ("HARD_SWISH", "AVERAGE_POOL_2D", "SOFTMAX", "RELU")


def lower_for_xnnpack(tflite: bytes, *, int8_dot_product: bool = True) -> bytes:
    """`tflite` rewritten as the module doc says; a model with nothing to rewrite comes back unchanged.

    `int8_dot_product`: whether the CPU it will run on has int8 dot products (Arm dotprod, as phones
    since Armv8.2; x86 AVX-512 VNNI / AVX-VNNI). Without them (x86 with AVX2 only, Cortex-A53/A72)
    rewrites 3. and 4. are left out: they add multiplications by zero to save steps, which XNNPACK's
    int8 kernels there run at fp32 speed or below (`machine.has_int8_dot_product()` tells for this one).
    """
    tflite_file.read_tflite(tflite, source="`tflite`")  # a clear error for bytes that are no model
    model = tflite_file.unpack(tflite)
    changed = False
    for graph in model.subgraphs:
        changed |= _split_depth_multipliers(model, graph)
        if int8_dot_product:
            changed |= _shuffles_as_convolutions(model, graph)  # before 1. would make the TRANSPOSE an island
        changed |= _float_islands(model, graph)
        if int8_dot_product:
            changed |= _pack_narrow_convs(model, graph)
    return tflite_file.pack(model) if changed else bytes(tflite)


# 1. float islands

def _float_islands(model, graph) -> bool:
    schema = tflite_file.schema
    islands = {getattr(schema.BuiltinOperator, name) for name in FLOAT_ISLAND_OPS}
    integers = {schema.TensorType.INT8, schema.TensorType.UINT8}
    operators, changed = [], False
    for op in graph.operators:
        builtin = tflite_file.builtin_code(model, op)
        source, target = graph.tensors[op.inputs[0]].type, graph.tensors[op.outputs[0]].type
        if source == schema.TensorType.INT8 and (builtin in islands or _shuffle_transpose(model, graph, op)):
            operators += _float_island(model, graph, op)
        elif builtin == schema.BuiltinOperator.QUANTIZE and {source, target} == integers:  # not int8 -> int8
            operators += _through_float(model, graph, op)
        else:
            operators.append(op)
            continue
        changed = True
    graph.operators = operators
    return changed


def _shuffle_transpose(model, graph, op) -> bool:
    """A TRANSPOSE of blocks under 256 elements (the output's last two axes), as a channel shuffle
    of fewer than 256 channels is: XNNPACK's int8 kernel moves such blocks byte by byte, slower
    than its float one plus the conversions (LiteRT, 1 thread, AVX-512 VNNI: (1, 3136, 4, 6) 84 us
    in int8, 42 as an island; (1, 784, 2, 24) 28 and 21; (1, 49, 2, 96) 5.7 and 5.2), while larger
    blocks are faster in int8 ((1, 1024, 16, 16) 42 and 57)."""
    if tflite_file.builtin_code(model, op) != tflite_file.schema.BuiltinOperator.TRANSPOSE:
        return False
    shape = graph.tensors[op.outputs[0]].shape
    return len(shape) >= 2 and shape[-1] * shape[-2] < 256


def _through_float(model, graph, op) -> list:
    """[DEQUANTIZE, QUANTIZE] in place of a requantising QUANTIZE (uint8 <-> int8)."""
    schema = tflite_file.schema
    middle = _float_twin(model, graph, op.inputs[0])
    # int8 input: DEQUANTIZE version 2; float -> int8: QUANTIZE version 1 (TFLite's op versioning)
    return [tflite_file.new_operator(model, schema.BuiltinOperator.DEQUANTIZE, 2, [op.inputs[0]], [middle]),
            tflite_file.new_operator(model, schema.BuiltinOperator.QUANTIZE, 1, [middle], list(op.outputs))]


def _float_island(model, graph, op) -> list:
    """[DEQUANTIZE, op on float tensors, QUANTIZE]: the op's int8 input and output tensors stay
    where they are (other ops and the graph's signature refer to them by index)."""
    schema = tflite_file.schema
    float_in, float_out = _float_twin(model, graph, op.inputs[0]), _float_twin(model, graph, op.outputs[0])
    dequantize = tflite_file.new_operator(model, schema.BuiltinOperator.DEQUANTIZE, 2, [op.inputs[0]], [float_in])
    quantize = tflite_file.new_operator(model, schema.BuiltinOperator.QUANTIZE, 1, [float_out], [op.outputs[0]])
    op.inputs = [float_in, *op.inputs[1:]]
    op.outputs = [float_out]
    return [dequantize, op, quantize]


def _float_twin(model, graph, index: int) -> int:
    """A new float32 activation tensor shaped as tensor `index`; returns its index."""
    twin = tflite_file.new_tensor(model, graph, index, b"/float")
    graph.tensors[twin].type, graph.tensors[twin].quantization = tflite_file.schema.TensorType.FLOAT32, None
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
    if tflite_file.builtin_code(model, op) != tflite_file.schema.BuiltinOperator.DEPTHWISE_CONV_2D:
        return 1
    return graph.tensors[op.outputs[0]].shape[-1] // graph.tensors[op.inputs[0]].shape[-1]


_REORDERABLE_TYPES = ("int8", "int32", "float32")


def _reorderable(model, graph, index: int) -> bool:
    """A constant held in the file, of a type the rewrite reorders (not, e.g., float16 weights
    behind a DEQUANTIZE op, whose float tensor is computed)."""
    tensor = graph.tensors[index]
    data = model.buffers[tensor.buffer].data
    return data is not None and len(data) > 0 and tflite_file.type_name(tensor.type) in _REORDERABLE_TYPES


def _readers(model, graph, tensor: int):
    """The CONV_2D ops that read `tensor` as their input (their filters can take its channels in
    another order); None when anything else reads it or it is a graph output."""
    if tensor in graph.outputs:
        return None
    readers = tflite_file.ops_reading(graph, tensor)
    conv = tflite_file.schema.BuiltinOperator.CONV_2D
    channels = graph.tensors[tensor].shape[-1]
    if not readers or any(tflite_file.builtin_code(model, op) != conv or op.inputs[0] != tensor
                          or tensor in op.inputs[1:] or graph.tensors[op.inputs[1]].shape[-1] != channels
                          for op in readers):
        return None
    return readers


def _copies_then_depthwise(model, graph, op, multiplier: int, readers) -> list:
    schema = tflite_file.schema
    channels = graph.tensors[op.inputs[0]].shape[-1]
    # copy-major channel j = k * channels + c is the depthwise's old channel c * multiplier + k
    order = np.array([c * multiplier + k for k in range(multiplier) for c in range(channels)])
    copies = tflite_file.new_tensor(model, graph, op.inputs[0], b"/copies")  # the input, m times the channels
    for field in ("shape", "shapeSignature"):
        dims = getattr(graph.tensors[copies], field)
        if dims is not None and len(dims):
            dims = list(dims)
            dims[-1] *= multiplier
            setattr(graph.tensors[copies], field, dims)
    version = 2 if graph.tensors[copies].type == schema.TensorType.INT8 else 1  # TFLite's op versioning
    concat = tflite_file.new_operator(model, schema.BuiltinOperator.CONCATENATION, version,
                                      [op.inputs[0]] * multiplier, [copies])
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
    tensor = graph.tensors[index]
    values = tflite_file.constant_values(model, graph, index)
    shared = sum(list(op.inputs).count(index) for op in graph.operators) > 1 or \
        sum(t.buffer == tensor.buffer for t in graph.tensors) > 1
    twin = tflite_file.new_tensor(model, graph, index, b"/reordered") if shared else index
    model.buffers[graph.tensors[twin].buffer].data = np.ascontiguousarray(values[..., order]).view(np.uint8).ravel()
    quant = graph.tensors[twin].quantization
    if per_channel and quant is not None and quant.scale is not None and len(quant.scale) == len(order):
        quant.scale = np.asarray(quant.scale)[order].tolist()
        quant.zeroPoint = np.asarray(quant.zeroPoint)[order].tolist()
    return twin


# 3. narrow int8 convolutions

LANES = 16  # int8 output channels XNNPACK's kernels compute per step (x86 AVX-512 / AVX2, Arm NEON)


def _pack_narrow_convs(model, graph) -> bool:
    operators, changed, packed_source = [], False, {}
    for op in graph.operators:
        k = _packing(model, graph, op)
        if k > 1:
            operators += _packed_along_width(model, graph, op, k, packed_source)
            changed = True
        else:
            operators.append(op)
    read = {t for op in operators for t in op.inputs} | set(graph.outputs)
    # drop a RESHAPE back that only the next packed op would have read (it takes the packed tensor)
    graph.operators = [op for op in operators if op.outputs[0] not in packed_source or op.outputs[0] in read
                       or tflite_file.builtin_code(model, op) != tflite_file.schema.BuiltinOperator.RESHAPE]
    return changed


def _packing(model, graph, op) -> int:
    """k > 1 when `op` is an int8 stride-1 convolution narrow enough to pack (module doc, 3.)."""
    schema = tflite_file.schema
    builtin = tflite_file.builtin_code(model, op)
    if builtin not in (schema.BuiltinOperator.CONV_2D, schema.BuiltinOperator.DEPTHWISE_CONV_2D):
        return 1
    x, w, y = graph.tensors[op.inputs[0]], graph.tensors[op.inputs[1]], graph.tensors[op.outputs[0]]
    if {x.type, w.type, y.type} != {schema.TensorType.INT8} or len(x.shape) != 4:
        return 1
    options = op.builtinOptions
    if (options.strideH, options.strideW, options.dilationHFactor, options.dilationWFactor) != (1, 1, 1, 1):
        return 1
    if list(x.shape[:3]) != list(y.shape[:3]) or x.shape[0] != 1 or not _reorderable(model, graph, op.inputs[1]):
        return 1
    kernel_w = w.shape[2]
    if builtin == schema.BuiltinOperator.CONV_2D:
        if list(w.shape[1:3]) != [1, 1]:
            return 1
    elif x.shape[3] != y.shape[3] or kernel_w % 2 == 0 or options.padding != schema.Padding.SAME:
        return 1
    if w.quantization is None or any(w.quantization.zeroPoint if w.quantization.zeroPoint is not None else []):
        return 1
    width, channels = x.shape[2], y.shape[3]
    return max([k for k in range(2, LANES // channels + 1) if width % k == 0], default=1)


def _packed_along_width(model, graph, op, k: int, packed_source: dict) -> list:
    """RESHAPE (1, H, W, C) -> (1, H, W/k, k*C), one CONV_2D on k columns at once, RESHAPE back."""
    schema = tflite_file.schema
    x, y = op.inputs[0], op.outputs[0]
    height, width = graph.tensors[x].shape[1:3]
    ops = []
    if packed_source.get(x, (None, 0))[1] == k:  # the previous packed op's output, before its RESHAPE back
        packed_in = packed_source[x][0]
    else:
        packed_in = _reshaped_twin(model, graph, x, [1, height, width // k, k * graph.tensors[x].shape[3]])
        ops.append(_reshape(model, graph, x, packed_in))
    packed_out = _reshaped_twin(model, graph, y, [1, height, width // k, k * graph.tensors[y].shape[3]])
    depthwise = tflite_file.builtin_code(model, op) == schema.BuiltinOperator.DEPTHWISE_CONV_2D
    weights = _packed_filter(model, graph, op.inputs[1], k, depthwise)
    bias = [_tiled_constant(model, graph, op.inputs[2], k)] if len(op.inputs) > 2 and op.inputs[2] >= 0 else [-1]
    conv = _stride1_conv(model, [packed_in, weights, *bias], packed_out, op.builtinOptions.fusedActivationFunction)
    packed_source[y] = (packed_out, k)
    return ops + [conv, _reshape(model, graph, packed_out, y)]


def _packed_filter(model, graph, index: int, k: int, depthwise: bool) -> int:
    """The (k*O, kh, kw', k*I) int8 filter of the packed CONV_2D: column i of a group of k computes
    output (i, o) from input columns of its own group and, for a depthwise kernel wider than 1,
    the neighbouring groups' edge columns; every other weight is 0."""
    values = tflite_file.constant_values(model, graph, index)
    if depthwise:  # (1, kh, kw, C): output channel c reads input channel c
        _, kernel_h, kernel_w, channels = values.shape
        radius = (kernel_w - 1) // 2
        packed_radius = -(-radius // k)
        packed = np.zeros((k * channels, kernel_h, 2 * packed_radius + 1, k * channels), np.int8)
        each = np.arange(channels)
        for i, col, source in itertools.product(range(k), range(2 * packed_radius + 1), range(k)):
            dx = (col - packed_radius) * k + source - i  # offset in original columns
            if abs(dx) <= radius:
                packed[i * channels + each, :, col, source * channels + each] = values[0, :, dx + radius, :].T
    else:  # (O, 1, 1, I): block-diagonal, one block per column of the group
        outputs, inputs = values.shape[0], values.shape[3]
        packed = np.zeros((k * outputs, 1, 1, k * inputs), np.int8)
        for i in range(k):
            packed[i * outputs:(i + 1) * outputs, :, :, i * inputs:(i + 1) * inputs] = values
    twin = tflite_file.constant_twin(model, graph, index, packed, b"/packed")
    _tile_scales(graph.tensors[twin].quantization, k, axis=0)
    return twin


def _tiled_constant(model, graph, index: int, k: int) -> int:
    """Bias (C,) repeated for the k columns of a group, with its per-channel scales."""
    tiled = np.tile(tflite_file.constant_values(model, graph, index), k)
    twin = tflite_file.constant_twin(model, graph, index, tiled, b"/packed")
    _tile_scales(graph.tensors[twin].quantization, k, axis=0)
    return twin


def _tile_scales(quant, k: int, axis: int) -> None:
    if quant is not None and quant.scale is not None and len(quant.scale) > 1:  # per channel
        quant.scale = np.tile(np.asarray(quant.scale), k).tolist()
        quant.zeroPoint = np.tile(np.asarray(quant.zeroPoint), k).tolist()
        quant.quantizedDimension = axis


def _reshaped_twin(model, graph, index: int, shape) -> int:
    twin = tflite_file.new_tensor(model, graph, index, b"/packed")
    graph.tensors[twin].shape, graph.tensors[twin].shapeSignature = list(shape), None
    return twin


def _reshape(model, graph, source: int, target: int):
    schema = tflite_file.schema
    shape = [-1, *graph.tensors[target].shape[1:]]  # any batch, as the plain graph allows
    constant = tflite_file.constant_twin(model, graph, source, np.asarray(shape, np.int32), b"/shape")
    graph.tensors[constant].type, graph.tensors[constant].quantization = schema.TensorType.INT32, None
    op = tflite_file.new_operator(model, schema.BuiltinOperator.RESHAPE, 1, [source, constant], [target])
    op.builtinOptionsType = schema.BuiltinOptions.ReshapeOptions
    op.builtinOptions = schema.ReshapeOptionsT()
    op.builtinOptions.newShape = shape
    return op


# 4. channel shuffles

SHUFFLE_CONV_MAX_CHANNELS = 48  # up to here XNNPACK's int8 1x1 convolution permutes faster (module doc, 4.)


def _shuffles_as_convolutions(model, graph) -> bool:
    shuffles = [found for op in graph.operators if (found := _channel_shuffle(model, graph, op))]
    if not shuffles:
        return False
    dropped = {id(op) for split, transpose, _ in shuffles for op in (split, transpose)}
    convs = {id(merge): _permutation_conv(model, graph, split, merge) for split, _, merge in shuffles}
    graph.operators = [convs.get(id(op), op) for op in graph.operators if id(op) not in dropped]
    return True


def _channel_shuffle(model, graph, transpose):
    """(RESHAPE, TRANSPOSE, RESHAPE) when `transpose` swaps the two axes a RESHAPE split an int8
    (N, H, W, C <= SHUFFLE_CONV_MAX_CHANNELS) tensor's channels into, and the next RESHAPE restores
    that shape and quantisation; the two tensors between them read by nothing else; else None."""
    schema = tflite_file.schema
    reshape = schema.BuiltinOperator.RESHAPE
    if tflite_file.builtin_code(model, transpose) != schema.BuiltinOperator.TRANSPOSE:
        return None
    split, merge = tflite_file.writer_of(graph, transpose.inputs[0]), _sole_reader(graph, transpose.outputs[0])
    if split is None or merge is None or _sole_reader(graph, split.outputs[0]) is not transpose \
            or tflite_file.builtin_code(model, split) != reshape or tflite_file.builtin_code(model, merge) != reshape:
        return None
    x, grouped, y = (graph.tensors[t] for t in (split.inputs[0], split.outputs[0], merge.outputs[0]))
    rank, channels = len(grouped.shape), x.shape[-1]
    if {x.type, y.type} != {schema.TensorType.INT8} or len(x.shape) != 4 or list(y.shape) != list(x.shape) \
            or rank < 3 or grouped.shape[-2] * grouped.shape[-1] != channels or channels > SHUFFLE_CONV_MAX_CHANNELS \
            or not _same_per_tensor_quantization(x, y) or not _reorderable(model, graph, transpose.inputs[1]):
        return None
    swap_last_two = [*range(rank - 2), rank - 1, rank - 2]
    permutation = tflite_file.constant_values(model, graph, transpose.inputs[1]).tolist()
    return (split, transpose, merge) if permutation == swap_last_two else None


def _same_per_tensor_quantization(x, y) -> bool:
    """RESHAPE and TRANSPOSE copy integers: the convolution gives the same ones only when its input
    and output share one scale and zero point (then its multiplier is 1)."""
    quants = [t.quantization for t in (x, y)]
    if any(q is None or q.scale is None or len(q.scale) != 1 for q in quants):
        return False
    return list(quants[0].scale) == list(quants[1].scale) and list(quants[0].zeroPoint) == list(quants[1].zeroPoint)


def _sole_reader(graph, tensor: int):
    """The one op that reads `tensor`; None when it is a graph output or read by more or none."""
    readers = tflite_file.ops_reading(graph, tensor)
    return readers[0] if len(readers) == 1 and tensor not in graph.outputs else None


def _permutation_conv(model, graph, split, merge):
    """One 1x1 CONV_2D from the shuffle's input to its output: output channel k reads input channel
    order[k] with weight 1 at scale 1 and a zero bias (TFLite's int8 kernel wants one), so its int32
    sum is that input's integer less its zero point."""
    schema = tflite_file.schema
    x = split.inputs[0]
    grouped = graph.tensors[split.outputs[0]].shape
    channels = grouped[-2] * grouped[-1]
    order = np.arange(channels).reshape(grouped[-2], grouped[-1]).T.ravel()  # what the TRANSPOSE reads
    weights = np.zeros((channels, 1, 1, channels), np.int8)
    weights[np.arange(channels), 0, 0, order] = 1
    filters = tflite_file.per_channel_constant(model, graph, x, weights, schema.TensorType.INT8, 1.0,
                                               suffix=b"/shuffle")
    bias = tflite_file.per_channel_constant(model, graph, x, np.zeros(channels, np.int32), schema.TensorType.INT32,
                                            float(graph.tensors[x].quantization.scale[0]),  # input x filter scale
                                            suffix=b"/shuffle")
    return _stride1_conv(model, [x, filters, bias], merge.outputs[0], schema.ActivationFunctionType.NONE)


# shared

def _stride1_conv(model, inputs, output: int, activation: int):
    """A stride-1, SAME-padded int8 CONV_2D op (per-channel filter scales: version 3)."""
    schema = tflite_file.schema
    conv = tflite_file.new_operator(model, schema.BuiltinOperator.CONV_2D, 3, inputs, [output])
    conv.builtinOptionsType = schema.BuiltinOptions.Conv2DOptions
    conv.builtinOptions = schema.Conv2DOptionsT()
    conv.builtinOptions.padding = schema.Padding.SAME
    conv.builtinOptions.strideH = conv.builtinOptions.strideW = 1
    conv.builtinOptions.dilationHFactor = conv.builtinOptions.dilationWFactor = 1
    conv.builtinOptions.fusedActivationFunction = activation
    return conv


