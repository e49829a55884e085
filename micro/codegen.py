"""TFLite Micro sources for an int8 model: C array, exact op resolver, model settings, arena size,
golden pairs for the firmware's self-test.

Writes `<name>_model_data.h/.cc`, `<name>_op_resolver.h`, `<name>_model_settings.h`,
`<name>_golden.h` and `arena.json`, after the deployment lint: a model TFLite Micro cannot run is
refused before any file is written, with the ops and layers to change.
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
GOLDEN_COUNT = 2  # golden pairs in <name>_golden.h: the fewest that show the output follows the input


def c_identifier(name: str) -> str:
    """A valid, lower-case C identifier from a model name ('MobileNet-v2 1.0' -> 'mobilenet_v2_1_0')."""
    ident = re.sub(r"\W+", "_", name.strip()).strip("_").lower()
    if not ident:
        raise ValueError(f"cannot make a C identifier from model name {name!r}")
    return f"m_{ident}" if ident[0].isdigit() else ident


def _im2col_bytes(graph: Graph) -> list[int]:
    """CMSIS-NN's int8 im2col scratch buffer of each convolution: about 2 bytes (int16) per input
    channel x kernel element."""
    sizes = []
    for op in graph.ops:
        if op.name in ("CONV_2D", "DEPTHWISE_CONV_2D") and len(op.inputs) > 1:
            kernel = op.inputs[1].shape  # (out, kh, kw, in) or (1, kh, kw, out)
            if len(kernel) == 4:
                sizes.append(2 * kernel[1] * kernel[2] * kernel[3])
    return sizes


def _align16(size: int) -> int:
    return (size + 15) // 16 * 16


# TFLite Micro plans the arena in the arena: while it allocates the tensors it holds, in the memory
# not yet given to the persistent tail, one AllocationInfo per tensor and scratch buffer (32 bytes on
# a 64-bit host, 24 on a Cortex-M) and the greedy planner's 40 bytes per planned buffer. Once the
# plan is made that space is freed, so the measured total does not show it; when the activations
# are small (a small input) it exceeds them, and an arena of the measured size fails in
# AllocateTensors ("Too many buffers").
_ALLOCATION_INFO_BYTES = 32
_PLANNER_BYTES_PER_BUFFER = 40
# Scratch buffers an op's kernel asks for, at most (TFLite Micro's reference and CMSIS-NN kernels);
# an op not listed is counted as one (most ask for none or one).
_SCRATCH_REQUESTS = {"FULLY_CONNECTED": 2, "MEAN": 3, "SUM": 3, "REDUCE_MAX": 3, "REDUCE_MIN": 3,
                     "REDUCE_PROD": 3, "MIRROR_PAD": 2, "ADD_N": 2, "SVDF": 6, "TRANSPOSE_CONV": 6,
                     "DETECTION_POSTPROCESS": 12}


def planning_bytes(graph: Graph) -> int:
    """Bytes TFLite Micro's allocator borrows from the arena while it plans it: an AllocationInfo per
    tensor and scratch buffer, and the planner's working arrays per activation and scratch buffer."""
    scratch = sum(_SCRATCH_REQUESTS.get(op.name, 1) for op in graph.ops)
    activations = sum(not t.is_constant for t in graph.tensors)
    return ((len(graph.tensors) + scratch) * _ALLOCATION_INFO_BYTES
            + (activations + scratch) * _PLANNER_BYTES_PER_BUFFER)


def scratch_headroom(graph: Graph, measured: int) -> int:
    """Bytes to add to the measured arena for the scratch buffers of optimised kernels and the
    allocator's planning.

    The Python TFLite Micro interpreter runs the reference kernels; CMSIS-NN's int8 convolution
    also asks for an im2col scratch buffer. Headroom = the largest such buffer over the model's
    convolutions, the memory the allocator borrows while it plans (`planning_bytes`), at least
    10% of the measured arena and at least 1 KiB, rounded up to 16 bytes.
    """
    return _align16(max(max(_im2col_bytes(graph), default=0), planning_bytes(graph),
                        math.ceil(0.10 * measured), MIN_HEADROOM))


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


def c_int8_table(declarator: str, rows) -> str:
    """`constexpr int8_t <declarator> = {{...}, ...};` with one braced row per item of `rows`."""
    body = ",\n    ".join("{\n    " + _c_array(row) + "}" for row in np.asarray(rows, np.int8))
    return f"constexpr int8_t {declarator} = {{\n    {body}}};\n"


def golden_header(ident: str, inputs, outputs, checksums: dict | None = None) -> str:
    """Real inputs and the outputs TFLite Micro's reference kernels give for them (the firmware
    checks every pair); with `checksums` ({"arena_bytes", "tensors": [{"index", "name", "bytes",
    "crc32"}]}) also the CRC-32 of every activation tensor for the first input."""
    g = _guard(ident, "GOLDEN")
    inputs = np.asarray(inputs, np.int8).reshape(len(inputs), -1)
    outputs = np.asarray(outputs, np.int8).reshape(len(inputs), -1)
    text = (f"#ifndef {g}\n#define {g}\n\n#include <cstdint>\n\n"
            f"namespace {ident}_model {{\n\n"
            "// Real inputs whose outputs differ from each other and are not constant, and the output\n"
            "// TFLite Micro's reference kernels (host) give for each.\n"
            f"constexpr int kGoldenCount = {len(inputs)};\n"
            f"constexpr int kGoldenInputSize = {inputs.shape[1]};\n"
            f"constexpr int kGoldenOutputSize = {outputs.shape[1]};\n"
            + c_int8_table("kGoldenInputs[kGoldenCount][kGoldenInputSize]", inputs)
            + c_int8_table("kGoldenOutputs[kGoldenCount][kGoldenOutputSize]", outputs))
    if checksums:
        table = "\n    ".join(f"{{{t['index']}, {t['bytes']}, 0x{t['crc32']:08x}u}},  // {t['name']}"
                                 for t in checksums["tensors"])
        text += ("\n// KN_TENSOR_CHECKSUMS builds: every activation tensor kept (preserve_all_tensors), and the\n"
                 "// CRC-32 (zlib's) of each after kGoldenInputs[0]. The arena bound adds every activation\n"
                 "// tensor and every CMSIS-NN im2col buffer to kTensorArenaSize.\n"
                 "#define KN_HAVE_TENSOR_CHECKSUMS 1\n"
                 f"constexpr int kTensorArenaSizeAllTensors = {checksums['arena_bytes']};\n"
                 "struct TensorChecksum {\n  int index;\n  int bytes;\n  uint32_t crc32;\n};\n"
                 f"constexpr int kTensorChecksumCount = {len(checksums['tensors'])};\n"
                 f"constexpr TensorChecksum kTensorChecksums[kTensorChecksumCount] = {{\n    {table}\n}};\n")
    return text + f"\n}}  // namespace {ident}_model\n\n#endif  // {g}\n"


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


def _micro_in_child(call, name: str, what: str):
    """A TFLite Micro step run in a child process; its crash becomes an error saying nothing was written."""
    try:
        return call()
    except arena.MicroCrash as crash:
        raise arena.MicroCrash(
            f"TFLite Micro crashed {what} for {name}, so nothing was written: {crash}\n"
            "If the model is untrained or its logits are near-uniform, export a trained model or "
            "pass other real `golden_inputs`.") from None


def _check_golden_inputs(golden_inputs, graph: Graph) -> np.ndarray:
    shape = tuple(graph.inputs[0].shape[1:])
    if golden_inputs is None:
        raise ValueError(f"`golden_inputs` is needed: at least {GOLDEN_COUNT} real int8 inputs of shape {shape}, "
                         "batch first (e.g. held-out images through kerasnets.pipelines.convert.quantize_input), "
                         "for the firmware's self-test")
    inputs = np.asarray(golden_inputs)
    if inputs.dtype != np.int8:
        raise TypeError(f"`golden_inputs` must be int8 (images quantised with the model's input scale and "
                        f"zero point: kerasnets.pipelines.convert.quantize_input); got {inputs.dtype}")
    size = int(np.prod(shape))
    if inputs.ndim < 2 or inputs.size % size or inputs.size // size < GOLDEN_COUNT:
        raise ValueError(f"`golden_inputs` must hold at least {GOLDEN_COUNT} inputs of shape {shape}, batch "
                         f"first; got shape {inputs.shape}")
    return inputs.reshape((-1, *shape))


def select_golden(outputs: np.ndarray, count: int = GOLDEN_COUNT) -> list[int]:
    """Indices of the first `count` outputs that are not constant and differ from each other (fewer
    if there are not that many): an output that is the same for every input, or one value
    repeated, would also come out of a broken port."""
    chosen: list[int] = []
    for i, row in enumerate(outputs):
        if len(chosen) == count:
            break
        if row.min() != row.max() and not any(np.array_equal(row, outputs[j]) for j in chosen):
            chosen.append(i)
    return chosen


def golden_pairs(tflite: bytes, golden_inputs, name: str, graph: Graph | None = None,
                 count: int = GOLDEN_COUNT) -> tuple[np.ndarray, np.ndarray]:
    """`count` (inputs, TFLite Micro outputs) picked from `golden_inputs` by `select_golden`;
    ValueError if the inputs do not give that many."""
    graph = graph or read_tflite(tflite, source=name)
    inputs = _check_golden_inputs(golden_inputs, graph)
    outputs = _micro_in_child(lambda: arena.run_micro_in_child(tflite, inputs), name, "on the golden inputs")
    outputs = outputs.reshape(len(inputs), -1)
    chosen = select_golden(outputs, count)
    if len(chosen) < count:
        distinct = len({row.tobytes() for row in outputs if row.min() != row.max()})
        raise ValueError(
            f"`golden_inputs`: TFLite Micro gives {name} {distinct} distinct non-constant outputs for the "
            f"{len(inputs)} inputs given; the firmware's self-test needs {count} inputs whose int8 outputs "
            "differ from each other and are not one value repeated, or a broken port could pass. Pass "
            "more or other real images (`golden_inputs`), or export a trained (or BatchNorm-calibrated) "
            "model: an untrained net's near-uniform logits quantise to the same values for every input.")
    return inputs[chosen], outputs[chosen]


def checksum_table(tflite: bytes, graph: Graph, golden_input: np.ndarray, arena_bytes: int, name: str) -> dict:
    """{"arena_bytes", "tensors"}: the CRC-32 TFLite Micro's reference kernels give every activation
    tensor for `golden_input`, and an arena that holds them all at once (for `golden_header`)."""
    tensors = [t for t in graph.tensors if not t.is_constant]
    rows = _micro_in_child(lambda: arena.tensor_checksums_in_child(tflite, golden_input, [t.index for t in tensors]),
                           name, "computing tensor checksums")
    bound = arena_bytes + sum(_align16(int(b)) for b, _ in rows) + sum(_align16(b) for b in _im2col_bytes(graph))
    return {"arena_bytes": bound,
            "tensors": [{"index": t.index, "name": t.name, "bytes": int(b), "crc32": int(c)}
                        for t, (b, c) in zip(tensors, rows)]}


def emit(tflite: bytes, out_dir, name: str, *, golden_inputs=None, labels=None, max_arena: int | None = None,
         firmware: bool = True, tensor_checksums: bool = False) -> dict:
    """Lint, measure and write the TFLite Micro sources for `tflite` into `out_dir`.

    `golden_inputs` (int8, batch first, at least GOLDEN_COUNT real inputs such as held-out images)
    are run through TFLite Micro and the first GOLDEN_COUNT whose outputs are not constant and
    differ from each other go into `<name>_golden.h` with those outputs: the firmware checks every
    pair. `tensor_checksums` adds the CRC-32 of every activation tensor for the first golden input
    (checked by a firmware built with KN_TENSOR_CHECKSUMS). With `firmware` the firmware template is
    copied to `out_dir/firmware/`. Returns {"files", "arena_bytes", "headroom_bytes", "ops",
    "findings", "golden_inputs", "golden_outputs"}. Raises MicroExportError (before writing
    anything) if the lint finds errors, ValueError if the arena exceeds `max_arena` or the golden
    inputs give fewer than GOLDEN_COUNT usable pairs, arena.MicroCrash (a RuntimeError) if TFLite
    Micro crashes.
    """
    graph = read_tflite(tflite, source=name)
    findings = lint_mod.lint(graph)
    if lint_mod.errors(findings):
        raise MicroExportError(name, lint_mod.errors(findings))
    measured = _micro_in_child(lambda: arena.measure_arena_in_child(tflite), name, "measuring the arena")
    headroom = scratch_headroom(graph, measured)
    if max_arena is not None and measured + headroom > max_arena:
        raise ValueError(f"{name} needs a {measured + headroom}-byte tensor arena ({measured} measured + "
                         f"{headroom} headroom), above `max_arena={max_arena}`: prune or shrink the "
                         "input (kerasnets.pipelines.prune) or raise the limit")
    inputs, outputs = golden_pairs(tflite, golden_inputs, name, graph)
    checksums = checksum_table(tflite, graph, inputs[0], measured + headroom, name) if tensor_checksums else None
    ident = c_identifier(name)
    classes = graph.outputs[0].shape[-1]
    labels = [str(i) for i in range(classes)] if labels is None else list(labels)
    ops = graph.op_names
    files = {
        f"{ident}_model_data.h": model_data_header(ident),
        f"{ident}_model_data.cc": model_data_source(ident, tflite),
        f"{ident}_op_resolver.h": op_resolver_header(ident, ops),
        f"{ident}_model_settings.h": model_settings_header(ident, graph, labels, measured + headroom),
        f"{ident}_golden.h": golden_header(ident, inputs, outputs, checksums),
        "kerasnets_model.h": umbrella_header(ident, name),
    }
    report = {"arena_bytes": measured, "headroom_bytes": headroom, "ops": ops,
              "findings": [str(f) for f in findings]}
    if checksums:
        report["all_tensors_arena_bytes"] = checksums["arena_bytes"]
    os.makedirs(out_dir, exist_ok=True)
    for filename, text in files.items():
        write_atomic(os.path.join(out_dir, filename), text)
    write_atomic(os.path.join(out_dir, "arena.json"), json.dumps(report, indent=1) + "\n")
    if firmware:
        shutil.copytree(FIRMWARE_TEMPLATE, os.path.join(out_dir, "firmware"), dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__"))
    return {**report, "files": sorted(files) + ["arena.json"], "golden_inputs": inputs, "golden_outputs": outputs}
