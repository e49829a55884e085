"""Deployment lint: what in an int8 .tflite will fail, or silently go wrong, on TFLite Micro."""
from __future__ import annotations

import dataclasses

from kerasnets.micro.ops import RESOLVER_METHOD
from kerasnets.pipelines.tflite_file import Graph, Op

_EDGE_OPS = {"QUANTIZE", "DEQUANTIZE"}  # float <-> int8 at the model's edges is legitimate
_DYNAMIC_SHAPE_OPS = {"SHAPE", "PACK"}
# TFLite Micro's int8 softmax rescales its input by beta * scale * 2**26 and checks (TFLITE_CHECK,
# an abort of the whole process, no error code) that the factor exceeds 1.
_SOFTMAX_MIN_INPUT_SCALE = 2.0 ** -26


@dataclasses.dataclass(frozen=True)
class Finding:
    severity: str  # "error": will not run or gives wrong outputs; "warning": wastes flash/RAM
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
            found.append(Finding("error", op.name, layer, "float op in an integer model.",
                                 "export with `mode=int8` (full integer, int8 input/output)"))
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


def lint(graph: Graph) -> list[Finding]:
    """Every finding for every op, errors first."""
    findings = [f for op in graph.ops for f in _check_op(op)]
    return sorted(findings, key=lambda f: f.severity != "error")


def errors(findings) -> list[Finding]:
    return [f for f in findings if f.severity == "error"]
