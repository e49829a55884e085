"""Read a .tflite flatbuffer (TF's own schema module): ops, tensors, quantisation, with clear errors.

Parsing the file, rather than loading it into an interpreter, also works for models that an
interpreter would refuse (Flex/custom ops), which is exactly when a user needs to be told why.
"""
from __future__ import annotations

import copy
import dataclasses

import numpy as np
from tensorflow.lite.python import schema_py_generated as schema

_OP_NAMES = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
_TYPE_NAMES = {v: k.lower() for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
_IDENTIFIER = b"TFL3"


@dataclasses.dataclass(frozen=True)
class Tensor:
    index: int
    name: str
    shape: tuple[int, ...]
    dtype: str  # "int8", "float32", ...
    scale: float | None
    zero_point: int | None
    is_constant: bool


@dataclasses.dataclass(frozen=True)
class Op:
    index: int
    name: str  # builtin op name, e.g. CONV_2D; custom ops as CUSTOM:<code>
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]


@dataclasses.dataclass(frozen=True)
class Graph:
    ops: tuple[Op, ...]
    tensors: tuple[Tensor, ...]
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]
    size_bytes: int

    @property
    def op_names(self) -> list[str]:
        """Unique op names in first-use order."""
        return list(dict.fromkeys(op.name for op in self.ops))


def type_name(code: int) -> str:
    """A schema TensorType code as its lower-case name ("int8", "float32", ...), a numpy dtype name."""
    return _TYPE_NAMES.get(code, str(code))


def _op_name(code) -> str:
    builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
    name = _OP_NAMES.get(builtin, f"BUILTIN_{builtin}")
    if name == "CUSTOM":
        return f"CUSTOM:{(code.CustomCode() or b'').decode(errors='replace')}"
    return name


def _tensor(model, graph, index) -> Tensor:
    t = graph.Tensors(index)
    quant = t.Quantization()
    scale = zero_point = None
    if quant is not None and quant.ScaleLength() == 1:
        scale, zero_point = float(quant.Scale(0)), int(quant.ZeroPoint(0))
    buffer = model.Buffers(t.Buffer()) if t.Buffer() < model.BuffersLength() else None
    constant = buffer is not None and (buffer.DataLength() > 0 or buffer.Size() > 0)
    return Tensor(index, (t.Name() or b"").decode(errors="replace"), tuple(int(d) for d in t.ShapeAsNumpy())
                  if t.ShapeLength() else (), type_name(t.Type()), scale,
                  zero_point, constant)


def unpack(data: bytes):
    """The model as TF's schema objects (schema.ModelT), to edit and `pack` again."""
    return schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(bytes(data), 0))


def pack(model) -> bytes:
    """.tflite bytes of schema objects (see `unpack`)."""
    import flatbuffers

    builder = flatbuffers.Builder(1024 * 1024)
    builder.Finish(model.Pack(builder), file_identifier=_IDENTIFIER)
    return bytes(builder.Output())


def read_tflite(data: bytes, *, source: str = "model") -> Graph:
    """Parse .tflite bytes; raises ValueError naming `source` if they are not a valid model."""
    data = bytes(data)
    if len(data) < 8 or data[4:8] != _IDENTIFIER:
        raise ValueError(f"{source} is not a TFLite model (no 'TFL3' flatbuffer identifier, "
                         f"{len(data)} bytes): export it again with `kerasnets export`")
    try:
        model = schema.Model.GetRootAs(data, 0)
        if model.SubgraphsLength() < 1:
            raise IndexError("it has no subgraph")
        graph = model.Subgraphs(0)
        tensors = tuple(_tensor(model, graph, i) for i in range(graph.TensorsLength()))
        codes = [model.OperatorCodes(i) for i in range(model.OperatorCodesLength())]
        ops = []
        for i in range(graph.OperatorsLength()):
            op = graph.Operators(i)
            ins = tuple(tensors[j] for j in op.InputsAsNumpy() if j >= 0) if op.InputsLength() else ()
            outs = tuple(tensors[j] for j in op.OutputsAsNumpy()) if op.OutputsLength() else ()
            ops.append(Op(i, _op_name(codes[op.OpcodeIndex()]), ins, outs))
        inputs = tuple(tensors[j] for j in graph.InputsAsNumpy())
        outputs = tuple(tensors[j] for j in graph.OutputsAsNumpy())
    except Exception as error:  # a truncated flatbuffer fails deep inside the accessors
        raise ValueError(f"{source} is a corrupt or truncated TFLite model ({type(error).__name__}: "
                         f"{error}); export it again with `kerasnets export`") from None
    return Graph(tuple(ops), tensors, inputs, outputs, len(data))


def read_tflite_file(path) -> tuple[bytes, Graph]:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as error:
        raise ValueError(f"cannot read {path}: {error.strerror}") from None
    return data, read_tflite(data, source=str(path))


def max_rank(graph: Graph) -> int:
    return max((len(t.shape) for t in graph.tensors), default=0)


def numpy_dtype(tensor: Tensor):
    return np.dtype(tensor.dtype)


def graph_macs(graph: Graph) -> int:
    """Multiply-accumulates of the conv / depthwise conv / fully connected ops (batch as built)."""
    total = 0
    for op in graph.ops:
        if len(op.inputs) < 2 or not op.outputs:
            continue
        out, kernel = op.outputs[0].shape, op.inputs[1].shape
        elements = int(np.prod(out)) if out else 0
        if op.name == "CONV_2D" and len(kernel) == 4:  # (out, kh, kw, in per group)
            total += elements * kernel[1] * kernel[2] * kernel[3]
        elif op.name == "DEPTHWISE_CONV_2D" and len(kernel) == 4:  # (1, kh, kw, out)
            total += elements * kernel[1] * kernel[2]
        elif op.name == "FULLY_CONNECTED" and len(kernel) == 2:  # (out, in)
            total += elements * kernel[1]
    return int(total)


def describe_mode(graph: Graph) -> str:
    """fp32 / fp16 / dynamic / int8 / uint8 / int16x8, read off the tensor types."""
    activations = {t.dtype for op in graph.ops for t in op.outputs}
    weights = {t.dtype for op in graph.ops for t in op.inputs if t.is_constant}
    io = graph.inputs[0].dtype if graph.inputs else "float32"
    if "int16" in activations:
        return "int16x8"
    if io in ("int8", "uint8"):
        return io
    if "int8" in activations:
        return "int8"
    if "int8" in weights:
        return "dynamic"
    return "fp16" if "float16" in weights else "fp32"


# editing an unpacked model (`unpack`): the graph rewrites of xnnpack.py and requantize.py

def builtin_code(model, op) -> int:
    """The BuiltinOperator code of `op`."""
    return _builtin_of(model.operatorCodes[op.opcodeIndex])


def _builtin_of(code) -> int:
    return max(code.builtinCode, code.deprecatedBuiltinCode)  # the deprecated field holds codes < 127


def per_channel_constant(model, graph, like: int, values: np.ndarray, tensor_type: int, scale: float,
                         *, suffix: bytes, axis: int = 0) -> int:
    """A new constant tensor holding `values`, quantised per channel along `axis` at `scale`."""
    index = constant_twin(model, graph, like, values, suffix)
    tensor = graph.tensors[index]
    tensor.type, tensor.quantization = tensor_type, schema.QuantizationParametersT()
    tensor.quantization.scale = [scale] * values.shape[axis]
    tensor.quantization.zeroPoint = [0] * values.shape[axis]
    tensor.quantization.quantizedDimension = axis
    return index


def constant_values(model, graph, index: int) -> np.ndarray:
    """The values of constant tensor `index`, shaped, in its own type (read-only)."""
    tensor = graph.tensors[index]
    dtype = np.dtype(type_name(tensor.type))
    return np.frombuffer(bytes(bytearray(model.buffers[tensor.buffer].data)), dtype).reshape(tensor.shape)


def constant_twin(model, graph, index: int, values: np.ndarray, suffix: bytes) -> int:
    """A copy of tensor `index` (type, quantisation) holding constant `values`, shaped as they are."""
    twin = new_tensor(model, graph, index, suffix)
    graph.tensors[twin].shape, graph.tensors[twin].shapeSignature = list(values.shape), None
    model.buffers[graph.tensors[twin].buffer].data = np.ascontiguousarray(values).view(np.uint8).ravel()
    return twin


def ops_reading(graph, tensor: int) -> list:
    """The ops that read `tensor`."""
    return [op for op in graph.operators if tensor in op.inputs]


def new_tensor(model, graph, index: int, suffix: bytes) -> int:
    """A copy of tensor `index` with an empty buffer of its own (to fill or leave for activations)."""
    twin = copy.deepcopy(graph.tensors[index])
    twin.name = (twin.name or b"") + suffix
    model.buffers.append(schema.BufferT())
    twin.buffer = len(model.buffers) - 1
    graph.tensors.append(twin)
    return len(graph.tensors) - 1


def new_operator(model, builtin: int, version: int, inputs, outputs):
    """A new op of type `builtin` (opcode added at `version` or raised to it) from `inputs` to `outputs`."""
    op = schema.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = _opcode_index(model, builtin, version), list(inputs), list(outputs)
    return op


def _opcode_index(model, builtin: int, version: int) -> int:
    for index, code in enumerate(model.operatorCodes):
        if _builtin_of(code) == builtin:
            code.version = max(code.version, version)
            return index
    code = schema.OperatorCodeT()
    code.builtinCode, code.deprecatedBuiltinCode, code.version = builtin, min(builtin, 127), version
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1


def writer_of(graph, tensor: int):
    """The op that writes activation `tensor` (None for a graph input or constant)."""
    return next((op for op in graph.operators if tensor in op.outputs), None)
