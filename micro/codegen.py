"""TFLite Micro sources for an int8 model: C array, exact op resolver, model settings, arena size.

Writes `<name>_model_data.h/.cc`, `<name>_op_resolver.h`, `<name>_model_settings.h` and
`arena.json`, after the deployment lint: a model TFLite Micro cannot run is refused before any
file is written, with the ops and layers to change.
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil

import numpy as np

from kerasnets.micro import arena, lint as lint_mod
from kerasnets.micro.ops import RESOLVER_METHOD
from kerasnets.pipelines.files import write_atomic
from kerasnets.pipelines.tflite_file import Graph, read_tflite

FIRMWARE_TEMPLATE = os.path.join(os.path.dirname(__file__), "firmware")
BYTES_PER_LINE = 12
MIN_HEADROOM = 1024


def c_identifier(name: str) -> str:
    """A valid, lower-case C identifier from a model name ('MobileNet-v2 1.0' -> 'mobilenet_v2_1_0')."""
    ident = re.sub(r"\W+", "_", name.strip()).strip("_").lower()
    if not ident:
        raise ValueError(f"cannot make a C identifier from model name {name!r}")
    return f"m_{ident}" if ident[0].isdigit() else ident


def scratch_headroom(graph: Graph, measured: int) -> int:
    """Bytes to add to the measured arena for the scratch buffers of optimised kernels.

    The Python TFLite Micro interpreter runs the reference kernels; CMSIS-NN's int8 convolution
    also asks for an im2col scratch buffer of about 2 bytes (int16) per input channel x kernel
    element. Headroom = the largest such buffer over the model's convolutions, at least 10% of
    the measured arena and at least 1 KiB, rounded up to 16 bytes.
    """
    im2col = 0
    for op in graph.ops:
        if op.name in ("CONV_2D", "DEPTHWISE_CONV_2D") and len(op.inputs) > 1:
            kernel = op.inputs[1].shape  # (out, kh, kw, in) or (1, kh, kw, out)
            if len(kernel) == 4:
                im2col = max(im2col, 2 * kernel[1] * kernel[2] * kernel[3])
    headroom = max(im2col, math.ceil(0.10 * measured), MIN_HEADROOM)
    return (headroom + 15) // 16 * 16


def _guard(ident, what):
    return f"KERASNETS_{ident.upper()}_{what}_H_"


def model_data_header(ident: str) -> str:
    g = _guard(ident, "MODEL_DATA")
    return (f"#ifndef {g}\n#define {g}\n\n"
            f"extern const unsigned char g_{ident}_model_data[];\n"
            f"extern const unsigned int g_{ident}_model_data_size;\n\n#endif  // {g}\n")


def model_data_source(ident: str, tflite: bytes) -> str:
    lines = []
    for start in range(0, len(tflite), BYTES_PER_LINE):
        chunk = tflite[start:start + BYTES_PER_LINE]
        lines.append("    " + ", ".join(f"0x{b:02x}" for b in chunk) + ",")
    body = "\n".join(lines)
    return (f'#include "{ident}_model_data.h"\n\n'
            "// The flatbuffer is read in place: 16-byte alignment keeps its tensors aligned.\n"
            f"alignas(16) const unsigned char g_{ident}_model_data[] = {{\n{body}\n}};\n"
            f"const unsigned int g_{ident}_model_data_size = {len(tflite)};\n")


def op_resolver_header(ident: str, ops: list[str]) -> str:
    g = _guard(ident, "OP_RESOLVER")
    adds = "\n".join(f"  TF_LITE_ENSURE_STATUS(resolver.{RESOLVER_METHOD[op]}());" for op in ops)
    return (f"#ifndef {g}\n#define {g}\n\n"
            '#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"\n\n'
            f"namespace {ident}_model {{\n\n"
            f"// Exactly the {len(ops)} ops of the model: {', '.join(ops)}.\n"
            f"constexpr int kNumberOfOps = {len(ops)};\n"
            "using OpResolver = tflite::MicroMutableOpResolver<kNumberOfOps>;\n\n"
            "inline TfLiteStatus RegisterOps(OpResolver& resolver) {\n"
            f"{adds}\n  return kTfLiteOk;\n}}\n\n"
            f"}}  // namespace {ident}_model\n\n#endif  // {g}\n")


def _c_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def model_settings_header(ident: str, graph: Graph, labels: list[str], arena_bytes: int) -> str:
    g = _guard(ident, "MODEL_SETTINGS")
    inp, out = graph.inputs[0], graph.outputs[0]
    dims = list(inp.shape[1:]) if len(inp.shape) == 4 else list(inp.shape)
    while len(dims) < 3:
        dims.append(1)
    classes = out.shape[-1]
    if len(labels) != classes:
        raise ValueError(f"{len(labels)} labels given for a model with {classes} outputs")
    label_list = ",\n    ".join(_c_string(label) for label in labels)
    return (f"#ifndef {g}\n#define {g}\n\n"
            f"namespace {ident}_model {{\n\n"
            f"constexpr int kInputHeight = {dims[0]};\n"
            f"constexpr int kInputWidth = {dims[1]};\n"
            f"constexpr int kInputChannels = {dims[2]};\n"
            "constexpr int kInputSize = kInputHeight * kInputWidth * kInputChannels;\n"
            f"constexpr float kInputScale = {inp.scale!r}f;\n"
            f"constexpr int kInputZeroPoint = {inp.zero_point};\n"
            f"constexpr float kOutputScale = {out.scale!r}f;\n"
            f"constexpr int kOutputZeroPoint = {out.zero_point};\n"
            f"constexpr int kCategoryCount = {classes};\n"
            f"// Measured with the TFLite Micro interpreter plus scratch headroom (see arena.json).\n"
            f"constexpr int kTensorArenaSize = {arena_bytes};\n\n"
            f"constexpr const char* kCategoryLabels[kCategoryCount] = {{\n    {label_list}}};\n\n"
            f"}}  // namespace {ident}_model\n\n#endif  // {g}\n")


def _c_array(values, per_line=16) -> str:
    values = [int(v) for v in np.asarray(values).ravel()]
    return ",\n    ".join(", ".join(str(v) for v in values[i:i + per_line])
                          for i in range(0, len(values), per_line))


def golden_header(ident: str, golden_input, golden_output) -> str:
    """One real input and the output TFLite Micro's reference kernels give for it."""
    g = _guard(ident, "GOLDEN")
    return (f"#ifndef {g}\n#define {g}\n\n#include <cstdint>\n\n"
            f"namespace {ident}_model {{\n\n"
            f"// Output of the TFLite Micro reference kernels (host) for kGoldenInput.\n"
            f"constexpr int8_t kGoldenInput[] = {{\n    {_c_array(golden_input)}}};\n"
            f"constexpr int8_t kGoldenOutput[] = {{\n    {_c_array(golden_output)}}};\n\n"
            f"}}  // namespace {ident}_model\n\n#endif  // {g}\n")


def umbrella_header(ident: str, name: str) -> str:
    """`kerasnets_model.h`: the firmware template's single include, aliasing the model as `kn`."""
    return ("#ifndef KERASNETS_MODEL_H_\n#define KERASNETS_MODEL_H_\n\n"
            f'#include "{ident}_golden.h"\n#include "{ident}_model_data.h"\n'
            f'#include "{ident}_model_settings.h"\n#include "{ident}_op_resolver.h"\n\n'
            f"namespace kn = {ident}_model;\n"
            f"namespace {ident}_model {{\n"
            f"inline const unsigned char* const kModelData = g_{ident}_model_data;\n"
            f"constexpr const char* kModelName = {_c_string(name)};\n}}\n\n"
            "#endif  // KERASNETS_MODEL_H_\n")


class MicroExportError(ValueError):
    """The model cannot run on TFLite Micro; `findings` says which ops and how to fix them."""

    def __init__(self, name, findings):
        self.findings = findings
        details = "\n  ".join(str(f) for f in findings)
        super().__init__(f"{name} cannot run on TFLite Micro:\n  {details}")


def _golden_output(tflite: bytes, golden: np.ndarray, name: str) -> np.ndarray:
    try:
        return arena.run_micro_in_child(tflite, golden)[0]
    except RuntimeError as crash:
        # Seen on untrained 1000-class nets: int8 SOFTMAX asserts on near-uniform logits.
        raise RuntimeError(
            f"TFLite Micro crashed running {name} on the golden input, so nothing was written: {crash}\n"
            "If the model is untrained or its logits are near-uniform, export a trained model or "
            "pass a real `golden_input`.") from None


def emit(tflite: bytes, out_dir, name: str, *, labels=None, max_arena: int | None = None,
         golden_input=None, firmware: bool = True) -> dict:
    """Lint, measure and write the TFLite Micro sources for `tflite` into `out_dir`.

    `golden_input` (int8, the model's input shape; zeros if None) and the output TFLite Micro
    gives for it go into `<name>_golden.h`; with `firmware` the Cortex-M firmware template is
    copied to `out_dir/firmware/`. Returns {"files", "arena_bytes", "headroom_bytes", "ops",
    "findings"}. Raises MicroExportError (before writing anything) if the lint finds errors or
    the arena exceeds `max_arena`.
    """
    graph = read_tflite(tflite, source=name)
    findings = lint_mod.lint(graph)
    if lint_mod.errors(findings):
        raise MicroExportError(name, lint_mod.errors(findings))
    measured = arena.measure_arena_in_child(tflite)
    headroom = scratch_headroom(graph, measured)
    if max_arena is not None and measured + headroom > max_arena:
        raise ValueError(f"{name} needs a {measured + headroom}-byte tensor arena ({measured} measured + "
                         f"{headroom} headroom), above `max_arena={max_arena}`: prune or shrink the "
                         "input (kerasnets.pipelines.prune) or raise the limit")
    ident = c_identifier(name)
    classes = graph.outputs[0].shape[-1]
    labels = [str(i) for i in range(classes)] if labels is None else list(labels)
    ops = graph.op_names
    shape = graph.inputs[0].shape
    golden = np.zeros(shape, np.int8) if golden_input is None else np.asarray(golden_input, np.int8).reshape(shape)
    golden_output = _golden_output(tflite, golden, name)
    files = {
        f"{ident}_model_data.h": model_data_header(ident),
        f"{ident}_model_data.cc": model_data_source(ident, tflite),
        f"{ident}_op_resolver.h": op_resolver_header(ident, ops),
        f"{ident}_model_settings.h": model_settings_header(ident, graph, labels, measured + headroom),
        f"{ident}_golden.h": golden_header(ident, golden, golden_output),
        "kerasnets_model.h": umbrella_header(ident, name),
    }
    report = {"arena_bytes": measured, "headroom_bytes": headroom, "ops": ops,
              "findings": [str(f) for f in findings]}
    os.makedirs(out_dir, exist_ok=True)
    for filename, text in files.items():
        write_atomic(os.path.join(out_dir, filename), text)
    write_atomic(os.path.join(out_dir, "arena.json"), json.dumps(report, indent=1) + "\n")
    if firmware:
        shutil.copytree(FIRMWARE_TEMPLATE, os.path.join(out_dir, "firmware"), dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__"))
    return {**report, "files": sorted(files) + ["arena.json"]}
