"""Deployment lint: what in an int8 .tflite will fail, or silently go wrong, on TFLite Micro, and
which ops an Ethos-U NPU would leave to the CPU."""
from __future__ import annotations

import dataclasses

from kerasnets.micro.ops import RESOLVER_METHOD
from kerasnets.pipelines.tflite_file import Graph, Op

_EDGE_OPS = {"QUANTIZE", "DEQUANTIZE"}  # float <-> int8 at the model's edges is legitimate
_DYNAMIC_SHAPE_OPS = {"SHAPE", "PACK"}
# TFLite Micro's int8 softmax rescales its input by beta * scale * 2**26 and checks (TFLITE_CHECK,
# an abort of the whole process, no error code) that the factor exceeds 1.
_SOFTMAX_MIN_INPUT_SCALE = 2.0 ** -26


# TFLite builtins Arm's Vela (5.2.0) can map to an Ethos-U NPU, by op type: its
# TFLiteSupportedOperators.supported_operators, used when Vela is not installed. Vela also checks
# each op's shapes, types and attributes; `kerasnets bench --target ethos-u55-128` gives the real placement.
ETHOS_U_OPS_VELA_5_2 = frozenset((
    "ABS ADD ARG_MAX AVERAGE_POOL_2D CONCATENATION CONV_2D DEPTHWISE_CONV_2D EXP EXPAND_DIMS "
    "FULLY_CONNECTED HARD_SWISH LEAKY_RELU LOGISTIC MAXIMUM MAX_POOL_2D MEAN MINIMUM MIRROR_PAD MUL "
    "PACK PAD PRELU QUANTIZE RELU RELU6 RELU_0_TO_1 RELU_N1_TO_1 RESHAPE RESIZE_BILINEAR "
    "RESIZE_NEAREST_NEIGHBOR RSQRT SHAPE SLICE SOFTMAX SPLIT SPLIT_V SQUARED_DIFFERENCE SQUEEZE "
    "STRIDED_SLICE SUB TANH TRANSPOSE TRANSPOSE_CONV UNIDIRECTIONAL_SEQUENCE_LSTM UNPACK").split())


def ethos_u_ops() -> frozenset:
    """Op types the installed Vela maps to the NPU (from its supported-operator table), else the
    table of Vela 5.2.0."""
    try:
        from ethosu.vela import tflite_mapping, tflite_supported_operators
        from ethosu.vela.tflite.BuiltinOperator import BuiltinOperator
    except ImportError:
        return ETHOS_U_OPS_VELA_5_2
    supported = tflite_supported_operators.TFLiteSupportedOperators.supported_operators
    return frozenset(name for name, code in vars(BuiltinOperator).items() if not name.startswith("_")
                     and code in tflite_mapping.builtin_operator_map
                     and tflite_mapping.builtin_operator_map[code][0] in supported)


@dataclasses.dataclass(frozen=True)
class Finding:
    severity: str  # "error": will not run or gives wrong outputs; "warning": wastes flash/RAM or NPU time
    op: str
    layer: str
    problem: str
    fix: str

    def __str__(self):
        return f"{self.severity}: {self.op} (layer {self.layer}): {self.problem} Fix: {self.fix}"


def layer_of(op: Op) -> str:
    """Keras layer an op came from, read off its tensor names ('model/layer/Op;...'): the output's,
    or for an op writing a model output (named 'StatefulPartitionedCall:0') its input's."""
    tensors = list(op.outputs) + [t for t in op.inputs if not t.is_constant]
    for tensor in tensors:
        parts = tensor.name.split(";")[0].split("/")
        if len(parts) > 2:
            return parts[1]
    return f"op #{op.index}"


def _is_float(tensor):
    return tensor.dtype in ("float32", "float16")


def _check_npu(op: Op, npu_ops) -> list[Finding]:
    base = op.name.split(":")[0]
    if base in npu_ops or base in _EDGE_OPS:
        return []
    return [Finding("warning", op.name, layer_of(op), "an Ethos-U NPU has no kernel for this op type: Vela "
                    "leaves it to the CPU and splits the NPU graph around it.",
                    "rebuild the layer from ops the NPU runs (Vela's SUPPORTED_OPS.md), e.g. fold a "
                    "channel GATHER into the next conv's weights (kerasnets.layers.IndexedGroupConv)")]


def _check_op(op: Op) -> list[Finding]:
    layer, found = layer_of(op), []
    base = op.name.split(":")[0]
    if base not in RESOLVER_METHOD or base == "CUSTOM":
        found.append(Finding("error", op.name, layer, "TFLite Micro has no kernel for this op.",
                             "rebuild the layer from TFLite Micro builtins (see kerasnets.micro.ops) "
                             "and convert with TFLITE_BUILTINS_INT8 only"))
    ranks = [len(t.shape) for t in op.inputs + op.outputs if not t.is_constant]
    if base == "TRANSPOSE" and max(ranks, default=0) > 4:
        found.append(Finding("error", op.name, layer,
                             f"{max(ranks)}-D transpose: CMSIS-NN's int8 TRANSPOSE takes at most 4-D and "
                             "its failure is not propagated, so a Cortex-M build returns wrong outputs.",
                             "shuffle through at most 4-D tensors (kerasnets.blocks.channel_shuffle)"))
    elif max(ranks, default=0) > 4:
        found.append(Finding("error", op.name, layer, f"{max(ranks)}-D tensor; TFLite Micro's optimised "
                             "kernels handle at most 4-D.", "reshape to at most 4 dimensions"))
    if base not in _EDGE_OPS:
        floats = [t for t in op.inputs + op.outputs if _is_float(t) and not t.is_constant]
        weights_int8 = any(t.is_constant and t.dtype == "int8" for t in op.inputs)
        if floats and weights_int8:
            found.append(Finding("error", op.name, layer, "hybrid op (float activations, int8 weights): "
                                 "TFLite Micro rejects dynamic-range models.",
                                 "export with `mode=int8` and a calibration set"))
        elif floats:
            found.append(Finding("error", op.name, layer, "float op in an integer model (a model lowered "
                                 "for XNNPACK, such as the app copy `<name>_app.tflite`, runs some ops in float).",
                                 "give TFLite Micro the plain int8 `<name>.tflite`, or export with `mode=int8` "
                                 "(full integer, int8 input/output)"))
    if base == "SOFTMAX" and op.inputs and op.inputs[0].dtype == "int8" and \
            op.inputs[0].scale is not None and op.inputs[0].scale <= _SOFTMAX_MIN_INPUT_SCALE:
        found.append(Finding("error", op.name, layer,
                             f"int8 softmax input scale {op.inputs[0].scale:.3g} is at or below 2^-26: "
                             "TFLite Micro's softmax aborts the process in Prepare (the logits "
                             "span almost no range).",
                             "calibrate with representative data on a trained model (an untrained "
                             "net's logits are near-constant), or export without the softmax "
                             "(`classifier_activation='linear'`: logits out, apply softmax on the host)"))
    if base in _DYNAMIC_SHAPE_OPS:
        found.append(Finding("warning", op.name, layer, "shape arithmetic left by a dynamic batch size "
                             "(wastes flash; some TFLite Micro ports lack the op).",
                             "convert at a static batch of 1 (kerasnets export does)"))
    return found


def lint(graph: Graph, *, npu: bool = True) -> list[Finding]:
    """Every finding for every op, errors first; with `npu`, a warning for each op an Ethos-U
    would leave to the CPU."""
    npu_ops = ethos_u_ops() if npu else None
    findings = [f for op in graph.ops for f in _check_op(op) + (_check_npu(op, npu_ops) if npu else [])]
    return sorted(findings, key=lambda f: f.severity != "error")


def errors(findings) -> list[Finding]:
    return [f for f in findings if f.severity == "error"]
