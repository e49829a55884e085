"""Build and run the kerasnets firmware (micro/firmware/) for a bundle of `kerasnets export --micro`.

Targets: "mps2-an386" (Arm Cortex-M4F, run in QEMU's mps2-an386 board with semihosting) and
"host" (the PC's g++, for fast checks). The kernels (reference or CMSIS-NN) are whatever the
TensorFlow Lite Micro tree holds: a folder or a `.tar.gz` made by TFLM's `create_tflm_tree.py`
(an archive is unpacked into the cache, never in place).

The TFLM library is compiled once per tree, target and flags into a cached static library
(`build_tflm_library`), so many models reuse it; a firmware build (`build_firmware`) compiles only
main.cc, the board layer and the model sources. `run_firmware` runs it and parses what it
prints; `benchmark` does all three.

Timing on QEMU: with `-icount shift=0` QEMU advances its virtual clock 1 ns per executed guest
instruction, and the firmware's clock is the SysTick timer at the MPS2 system clock (25 MHz), so
one tick is 40 instructions: `instructions` = ticks x 40 (resolution 40; measured with a
two-instruction loop of 10^7 iterations: 500,001 ticks). These are instruction
counts, not Cortex-M4 cycles (a real core needs 1-3 cycles for loads, multiplies and branches).
On the host the ticks are microseconds of wall time.
"""
from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import time

import numpy as np

FIRMWARE_DIR = os.path.join(os.path.dirname(__file__), "firmware")
TARGETS = ("mps2-an386", "host")
KERNELS = ("reference", "cmsis_nn")
MPS2_CPU_HZ = 25_000_000
QEMU_NS_PER_INSTRUCTION = 1  # -icount shift=0: 2**0 ns of virtual time per instruction
INSTRUCTIONS_PER_TICK = 1_000_000_000 // MPS2_CPU_HZ // QEMU_NS_PER_INSTRUCTION  # 40

_ARM_FLAGS = ["-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"]
_COMMON_FLAGS = ["-O2", "-ffunction-sections", "-fdata-sections", "-DTF_LITE_STATIC_MEMORY",
                 "-DTF_LITE_MCU_DEBUG_LOG", "-DKERNELS_OPTIMIZED_FOR_SPEED"]
_CXX_FLAGS = ["-std=c++17", "-fno-rtti", "-fno-exceptions", "-fno-threadsafe-statics",
              "-fno-use-cxa-atexit"]
_C_FLAGS = ["-std=c11"]
# Left out of the library: tests, examples, tools, Python bindings, and the Cortex-M timer that
# needs a CMSIS device header (the firmware's board layer provides ticks instead).
_EXCLUDE = re.compile(r"(_test\.cc$|/test_helper|/examples/|/benchmarks/|/python/|/tools/|"
                      r"/testing/|cortex_m_generic/micro_time\.cc$|fake_micro_context|mock_micro_graph)")


class FirmwareError(RuntimeError):
    """A firmware build or run failed; the message says which step and shows the tool's output."""


def _tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if not path:
        raise FirmwareError(f"{name} not found: install the Debian package {package} "
                            f"(apt-get install {package}, or scripts/bootstrap.sh as root)")
    return path


def _toolchain(target: str) -> dict:
    if target == "mps2-an386":
        return {"cc": _tool("arm-none-eabi-gcc", "gcc-arm-none-eabi"),
                "cxx": _tool("arm-none-eabi-g++", "gcc-arm-none-eabi"),
                "ar": _tool("arm-none-eabi-ar", "gcc-arm-none-eabi"),
                "size": _tool("arm-none-eabi-size", "binutils-arm-none-eabi"),
                "arch": _ARM_FLAGS}
    if target == "host":
        return {"cc": _tool("gcc", "gcc"), "cxx": _tool("g++", "g++"), "ar": _tool("ar", "binutils"),
                "size": shutil.which("size"), "arch": []}
    raise ValueError(f"`target` must be one of {', '.join(TARGETS)}; got {target!r}")


def default_cache_dir() -> str:
    return os.environ.get("KERASNETS_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "kerasnets", "tflm")


def _sha256_file(path, chunk=1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def _tree_root(folder: str) -> str | None:
    """The folder holding tensorflow/lite/micro (the folder itself or its only subfolder)."""
    if os.path.isfile(os.path.join(folder, "tensorflow", "lite", "micro", "micro_interpreter.h")):
        return folder
    subs = [os.path.join(folder, d) for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d))]
    if len(subs) == 1:
        return _tree_root(subs[0])
    return None


def resolve_tree(tflm_tree, cache_dir=None) -> str:
    """The root of a TFLM tree given as a folder or a `.tar.gz` (unpacked once into the cache)."""
    path = os.fspath(tflm_tree)
    if os.path.isfile(path) and tarfile.is_tarfile(path):
        dest = os.path.join(cache_dir or default_cache_dir(), "trees", _sha256_file(path)[:16])
        if not os.path.isdir(dest):
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            staging = tempfile.mkdtemp(dir=os.path.dirname(dest), prefix=".unpack-")
            with tarfile.open(path) as archive:
                archive.extractall(staging, filter="data")
            try:
                os.replace(staging, dest)
            except OSError:  # unpacked meanwhile by another process
                shutil.rmtree(staging, ignore_errors=True)
        path = dest
    if not os.path.isdir(path):
        raise FileNotFoundError(f"`tflm_tree` {tflm_tree!s} is neither a folder nor a .tar.gz")
    root = _tree_root(path)
    if root is None:
        raise ValueError(f"`tflm_tree` {tflm_tree!s} holds no tensorflow/lite/micro/micro_interpreter.h: "
                         "make one with tflite-micro's create_tflm_tree.py (see micro/firmware/README.md)")
    return root


def tree_kernels(root: str) -> str:
    """'cmsis_nn' if the tree has TFLM's CMSIS-NN kernels, else 'reference'."""
    return "cmsis_nn" if os.path.isdir(os.path.join(root, "tensorflow", "lite", "micro", "kernels",
                                                     "cmsis_nn")) else "reference"


def _include_dirs(root: str) -> list[str]:
    dirs = [root] + [os.path.join(root, "third_party", d) for d in (
        "flatbuffers/include", "gemmlowp", "ruy", "kissfft", "cmsis_nn", "cmsis_nn/Include",
        "cmsis/CMSIS/Core/Include")]
    return [d for d in dirs if os.path.isdir(d)]


def _tree_sources(root: str) -> list[str]:
    sources = []
    for top in ("tensorflow", os.path.join("third_party", "cmsis_nn", "Source")):
        for folder, _, files in os.walk(os.path.join(root, top)):
            for name in files:
                path = os.path.join(folder, name)
                rel = os.path.relpath(path, root).replace(os.sep, "/")
                if name.endswith((".cc", ".c")) and not _EXCLUDE.search("/" + rel):
                    sources.append(path)
    return sorted(sources)


def _flags(root: str, target: str, kernels: str) -> list[str]:
    flags = _toolchain(target)["arch"] + _COMMON_FLAGS
    if kernels == "cmsis_nn":
        flags = flags + ["-DCMSIS_NN"]
    return flags + [f"-I{d}" for d in _include_dirs(root)]


def _compile(tool, src, obj, flags) -> None:
    cxx = src.endswith(".cc")
    cmd = [tool["cxx"] if cxx else tool["cc"], *flags, *(_CXX_FLAGS if cxx else _C_FLAGS), "-c", src, "-o", obj]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        raise FirmwareError(f"compiling {src} failed:\n{' '.join(cmd)}\n{done.stderr[-3000:]}")


def _compile_all(tool, pairs, flags, jobs) -> None:
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        for future in [pool.submit(_compile, tool, src, obj, flags) for src, obj in pairs]:
            future.result()


_METHOD = re.compile(r"TfLiteStatus (Add\w+)\(")
_REGISTRATION = re.compile(r"\bRegister_(\w+)\s*\(")
_RESOLVER_CALL = re.compile(r"resolver\.(Add\w+)\(\)")


def _registrations(root: str, methods) -> set[str]:
    """Register_* functions the op resolver's Add* `methods` call (micro_mutable_op_resolver.h)."""
    with open(os.path.join(root, "tensorflow", "lite", "micro", "micro_mutable_op_resolver.h")) as f:
        header = f.read()
    starts = [(m.group(1), m.start()) for m in _METHOD.finditer(header)] + [("", len(header))]
    wanted, found = set(methods), set()
    names = set()
    for (method, start), (_, end) in zip(starts, starts[1:]):
        if method in wanted:
            found.add(method)
            names.update(_REGISTRATION.findall(header[start:end]))
    missing = wanted - found
    if missing:
        raise ValueError(f"`tflm_tree` has no MicroMutableOpResolver method {', '.join(sorted(missing))}")
    return names


_KERNEL_HELPERS = ("kernel_util.cc", "micro_tensor_utils.cc")


def _library_sources(root: str, methods) -> list[str]:
    """Sources for a TFLM library that serves the op resolver `methods` (None: every kernel).

    Always: everything outside micro/kernels (interpreter, allocator, planner, tensor utilities)
    and CMSIS-NN; from micro/kernels: the files defining a Register_* function the methods call,
    their `<file>_common.cc`, kernel_util.cc and micro_tensor_utils.cc. A firmware link that still
    misses a symbol falls back to every source (build_firmware does that).
    """
    sources = _tree_sources(root)
    if methods is None:
        return sources
    needed = _registrations(root, methods)
    chosen, stems = [], set()
    for path in sources:
        if "/micro/kernels/" not in path.replace(os.sep, "/"):
            chosen.append(path)
            continue
        with open(path, encoding="utf-8", errors="replace") as f:
            defined = set(re.findall(r"TFLMRegistration\*?\s+Register_(\w+)\s*\(", f.read()))
        if defined & needed:
            chosen.append(path)
            stems.add(os.path.basename(path)[:-3])
    for path in sources:
        name = os.path.basename(path)
        if "/micro/kernels/" in path.replace(os.sep, "/") and (
                name in _KERNEL_HELPERS or (name.endswith("_common.cc") and name[:-10] in stems)):
            chosen.append(path)
    return sorted(set(chosen))


def _tree_key(root: str, target: str, flags: list[str], tool: dict) -> str:
    """Hash of the tree's sources and headers and the flags, wherever the tree sits (the include
    paths name it as <tree>), so a tree unpacked or moved elsewhere reuses its library."""
    portable = [f.replace(root, "<tree>") for f in flags]
    digest = hashlib.sha256(json.dumps([target, portable, _CXX_FLAGS, _C_FLAGS, tool["cxx"]]).encode())
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            if name.endswith((".cc", ".c", ".h", ".hpp", ".inc")):
                path = os.path.join(folder, name)
                digest.update(os.path.relpath(path, root).encode())
                with open(path, "rb") as f:
                    digest.update(hashlib.sha256(f.read()).digest())
    return digest.hexdigest()[:16]


def build_tflm_library(tflm_tree, target: str = "mps2-an386", *, ops=None, cache_dir=None,
                       jobs: int | None = None, rebuild: bool = False) -> dict:
    """Compile the TFLM tree for `target` into a static library cached by tree content and flags.

    Each TFLM source is compiled at most once per tree, target and flags: the objects are cached
    and `libtflm.a` holds every object compiled so far, so later models reuse it. `ops` (op
    resolver method names such as "AddConv2D", as in a bundle's `<name>_op_resolver.h`) limits the
    op kernels compiled to those the model registers, plus what is compiled already; None
    compiles every kernel. Returns {"library", "root", "kernels", "target", "flags", "compiled"
    (sources compiled now), "objects", "seconds"}.
    """
    tool = _toolchain(target)
    root = resolve_tree(tflm_tree, cache_dir)
    kernels = tree_kernels(root)
    flags = _flags(root, target, kernels)
    key = f"{target}-{kernels}-{_tree_key(root, target, flags, tool)}"
    lib_dir = os.path.join(cache_dir or default_cache_dir(), "lib", key)
    obj_dir = os.path.join(lib_dir, "obj")
    library = os.path.join(lib_dir, "libtflm.a")
    if rebuild and os.path.isdir(lib_dir):
        shutil.rmtree(lib_dir)
    os.makedirs(obj_dir, exist_ok=True)
    started = time.monotonic()

    def obj_path(src):
        return os.path.join(obj_dir, os.path.relpath(src, root).replace(os.sep, "__") + ".o")

    todo = [(src, obj_path(src)) for src in _library_sources(root, ops) if not os.path.isfile(obj_path(src))]
    if todo:
        with tempfile.TemporaryDirectory(dir=lib_dir, prefix=".build-") as work:
            staged = [(src, os.path.join(work, os.path.basename(obj))) for src, obj in todo]
            _compile_all(tool, staged, flags, jobs or os.cpu_count() or 1)
            for (_, tmp), (_, obj) in zip(staged, todo):
                os.replace(tmp, obj)
    objects = sorted(os.path.join(obj_dir, f) for f in os.listdir(obj_dir) if f.endswith(".o"))
    if todo or not os.path.isfile(library):
        staged = library + ".tmp"
        if os.path.exists(staged):
            os.remove(staged)
        done = subprocess.run([tool["ar"], "rcs", staged, *objects], capture_output=True, text=True)
        if done.returncode:
            raise FirmwareError(f"archiving the TFLM library failed: {done.stderr[-2000:]}")
        os.replace(staged, library)
        with open(os.path.join(lib_dir, "build.json"), "w") as f:
            json.dump({"root": root, "kernels": kernels, "target": target, "flags": flags,
                       "objects": len(objects)}, f, indent=1)
    return {"library": library, "root": root, "kernels": kernels, "target": target, "flags": flags,
            "compiled": len(todo), "objects": len(objects), "seconds": time.monotonic() - started}


def read_model_bytes(model_dir) -> bytes:
    """The .tflite bytes held in the bundle's `<name>_model_data.cc`."""
    sources = [f for f in os.listdir(model_dir) if f.endswith("_model_data.cc")]
    if len(sources) != 1:
        raise ValueError(f"`model_dir` {model_dir!s} must hold one *_model_data.cc (from kerasnets export "
                         f"--micro); found {sources}")
    text = open(os.path.join(model_dir, sources[0]), encoding="utf-8").read()
    body = text[text.index("{") + 1:text.index("};")]
    return bytes(int(h, 16) for h in re.findall(r"0x([0-9a-fA-F]{2})", body))


def model_ops(model_dir) -> list[str]:
    """The op resolver methods (AddConv2D, ...) the bundle's `<name>_op_resolver.h` calls."""
    headers = [f for f in os.listdir(model_dir) if f.endswith("_op_resolver.h")]
    if len(headers) != 1:
        raise ValueError(f"`model_dir` {model_dir!s} must hold one *_op_resolver.h; found {headers}")
    with open(os.path.join(model_dir, headers[0]), encoding="utf-8") as f:
        return sorted(set(_RESOLVER_CALL.findall(f.read())))


def check_deployable(model_dir) -> None:
    """Raise codegen.MicroExportError if the deployment lint finds an error in the bundle's model
    (a 5-D transpose, an op without a kernel, ...): a bundle written or edited by hand skips the
    export's lint, and on the board some of these fail silently (CMSIS-NN's 5-D TRANSPOSE)."""
    from kerasnets.micro import codegen, lint
    from kerasnets.pipelines.tflite_file import read_tflite

    graph = read_tflite(read_model_bytes(model_dir), source=os.fspath(model_dir))
    found = lint.errors(lint.lint(graph, npu=False))
    if found:
        sources = [f for f in os.listdir(model_dir) if f.endswith("_model_data.cc")]
        raise codegen.MicroExportError(sources[0][:-len("_model_data.cc")], found)


def inputs_header(inputs: np.ndarray, expected: np.ndarray) -> str:
    """`kerasnets_inputs.h`: test inputs and their expected outputs for main.cc (laid out as the
    golden pairs of `<name>_golden.h`, which it replaces)."""
    from kerasnets.micro.codegen import c_int8_table

    inputs = np.asarray(inputs, np.int8).reshape(len(inputs), -1)
    expected = np.asarray(expected, np.int8).reshape(len(inputs), -1)
    return ("// Written by kerasnets.micro.firmware_build: test inputs and the outputs TFLite Micro's\n"
            "// reference kernels give for them on the host.\n#ifndef KERASNETS_INPUTS_H_\n"
            "#define KERASNETS_INPUTS_H_\n\n#include <cstdint>\n\nnamespace kn_inputs {\n\n"
            f"constexpr int kCount = {len(inputs)};\nconstexpr int kExpectedSize = {expected.shape[1]};\n"
            + c_int8_table(f"kInputs[kCount][{inputs.shape[1]}]", inputs)
            + c_int8_table("kExpected[kCount][kExpectedSize]", expected)
            + "\n}  // namespace kn_inputs\n\n#endif  // KERASNETS_INPUTS_H_\n")


def build_firmware(model_dir, tflm_tree, target: str = "mps2-an386", *, out_dir=None, inputs=None,
                   expected=None, tensor_checksums: bool = False, cache_dir=None,
                   jobs: int | None = None) -> dict:
    """Build the firmware for the bundle in `model_dir` (the `micro/` folder of `kerasnets export
    --micro`) against `tflm_tree` for `target`.

    `inputs` (int8, batch first) become the firmware's test inputs, with `expected` outputs (default:
    the TFLite Micro Python interpreter's, i.e. the reference kernels'); without `inputs` the
    bundle's golden pairs are used. `tensor_checksums` builds with KN_TENSOR_CHECKSUMS (the bundle
    must have been emitted with tensor checksums). A model the deployment lint refuses is refused
    here too, before anything is compiled (`check_deployable`). Returns {"elf", "target", "kernels",
    "library", "seconds", "library_seconds", "size"}.
    """
    model_dir = os.fspath(model_dir)
    if not os.path.isfile(os.path.join(model_dir, "kerasnets_model.h")):
        raise FileNotFoundError(f"`model_dir` {model_dir} holds no kerasnets_model.h: write it with "
                                "kerasnets.micro.codegen.emit (kerasnets export --micro)")
    check_deployable(model_dir)
    lib = build_tflm_library(tflm_tree, target, ops=model_ops(model_dir), cache_dir=cache_dir, jobs=jobs)
    library_seconds = lib["seconds"]
    tool = _toolchain(target)
    started = time.monotonic()
    out_dir = os.fspath(out_dir) if out_dir else tempfile.mkdtemp(prefix=f"kn-fw-{target}-")
    os.makedirs(out_dir, exist_ok=True)
    gen_dir = os.path.join(out_dir, "generated")
    os.makedirs(gen_dir, exist_ok=True)
    header = os.path.join(gen_dir, "kerasnets_inputs.h")
    if inputs is not None:
        inputs = np.asarray(inputs, np.int8)
        if expected is None:
            from kerasnets.micro import arena
            expected = arena.run_micro_in_child(read_model_bytes(model_dir), inputs)
        with open(header, "w", encoding="utf-8") as f:
            f.write(inputs_header(inputs, expected))
    elif os.path.exists(header):
        os.remove(header)
    board = "cortex_m" if target != "host" else "host"
    sources = [os.path.join(FIRMWARE_DIR, "main.cc"), os.path.join(FIRMWARE_DIR, f"{board}_platform.cc")]
    if board == "cortex_m":
        sources.append(os.path.join(FIRMWARE_DIR, "cortex_m_startup.c"))
    sources += sorted(os.path.join(model_dir, f) for f in os.listdir(model_dir) if f.endswith(".cc"))
    flags = lib["flags"] + [f"-I{gen_dir}", f"-I{model_dir}", f"-I{FIRMWARE_DIR}", "-Wall"]
    if tensor_checksums:
        flags.append("-DKN_TENSOR_CHECKSUMS")
    pairs = [(src, os.path.join(out_dir, os.path.basename(src) + ".o")) for src in sources]
    _compile_all(tool, pairs, flags, jobs or os.cpu_count() or 1)
    elf = os.path.join(out_dir, "kerasnets_firmware.elf" if board == "cortex_m" else "kerasnets_firmware")
    link = [tool["cxx"], *tool["arch"], *[o for _, o in pairs], lib["library"], "-o", elf, "-Wl,--gc-sections"]
    if board == "cortex_m":
        link += ["-T", os.path.join(FIRMWARE_DIR, "mps2_an386.ld"), "-nostartfiles",
                 "--specs=nano.specs", "--specs=nosys.specs", f"-Wl,-Map={elf}.map"]
    done = subprocess.run(link, capture_output=True, text=True)
    if done.returncode and "undefined reference" in done.stderr:  # a kernel needs more: every source
        lib = build_tflm_library(tflm_tree, target, ops=None, cache_dir=cache_dir, jobs=jobs)
        library_seconds += lib["seconds"]
        done = subprocess.run(link, capture_output=True, text=True)
    if done.returncode:
        raise FirmwareError(f"linking the firmware failed:\n{' '.join(link)}\n{done.stderr[-3000:]}")
    return {"elf": elf, "target": target, "kernels": lib["kernels"], "library": lib["library"],
            "seconds": time.monotonic() - started, "library_seconds": library_seconds,
            "size": elf_size(elf, target)}


def elf_size(elf, target: str = "mps2-an386") -> dict:
    """{"text", "data", "bss", "flash", "ram"} from `size` (Berkeley format): flash = text + data,
    RAM = data + bss (the tensor arena, stack and heap reserve included)."""
    tool = _toolchain(target)["size"]
    if not tool:
        return {}
    done = subprocess.run([tool, os.fspath(elf)], capture_output=True, text=True, check=True)
    text, data, bss = (int(v) for v in done.stdout.splitlines()[1].split()[:3])
    return {"text": text, "data": data, "bss": bss, "flash": text + data, "ram": data + bss}


def qemu_command(elf, *, icount: bool = True) -> list[str]:
    cmd = [_tool("qemu-system-arm", "qemu-system-arm"), "-M", "mps2-an386", "-nographic", "-monitor", "none",
           "-serial", "none", "-semihosting-config", "enable=on,target=native", "-kernel", os.fspath(elf)]
    return cmd + (["-icount", "shift=0"] if icount else [])


_LINE = re.compile(r"^kn-(\w+) (.*)$")


def parse_output(text: str) -> dict:
    """The firmware's "kn-" lines as {"model", "outputs", "ticks", "ticks_per_second", "max_diff",
    "checks" (PASS/FAIL per input), "tensors" ([{"index", "bytes", "crc32", "expected", "passed"}]
    of a KN_TENSOR_CHECKSUMS build), "arena_used", "arena_size", "passed", "errors"}."""
    outputs: dict[int, dict[int, list[int]]] = {}
    ticks, diffs, checks, tensors, errors = {}, {}, {}, [], []
    result = {"model": None, "ticks_per_second": None, "arena_used": None, "arena_size": None}
    for raw in text.splitlines():
        match = _LINE.match(raw.strip())
        if not match:
            continue
        kind, rest = match.groups()
        fields = rest.split()
        if kind == "output":
            outputs.setdefault(int(fields[0]), {})[int(fields[1])] = [int(v) for v in fields[2:]]
        elif kind == "ticks":
            ticks[int(fields[0])] = int(fields[1])
            result["ticks_per_second"] = int(fields[3])
        elif kind == "check":
            diffs[int(fields[0])] = int(fields[2])
            checks[int(fields[0])] = fields[3:4] == ["PASS"]
        elif kind == "tensor":
            tensors.append({"index": int(fields[0]), "bytes": int(fields[2]), "crc32": int(fields[4], 16),
                            "expected": int(fields[6], 16), "passed": fields[7] == "PASS"})
        elif kind == "arena":
            result["arena_used"], result["arena_size"] = int(fields[1]), int(fields[3])
        elif kind == "model":
            result["model"] = fields[0]
        elif kind in ("error", "fault"):
            errors.append(raw.strip())
    rows = []
    for n in sorted(outputs):
        row = []
        for offset in sorted(outputs[n]):
            row += outputs[n][offset]
        rows.append(row)
    result["outputs"] = np.array(rows, np.int8) if rows else np.zeros((0, 0), np.int8)
    result["ticks"] = [ticks[n] for n in sorted(ticks)]
    result["max_diff"] = [diffs[n] for n in sorted(diffs)]
    result["checks"] = [checks[n] for n in sorted(checks)]
    result["tensors"] = tensors
    result["errors"] = errors
    result["passed"] = ("~~~ALL TESTS PASSED~~~" in text and not errors and all(result["checks"])
                        and all(t["passed"] for t in tensors))
    return result


def run_firmware(elf, target: str = "mps2-an386", *, timeout: float = 600) -> dict:
    """Run a built firmware (QEMU for "mps2-an386", directly for "host") and parse its output.

    Adds "exit_code", "seconds" (wall time of the run), "log" and, on QEMU, "instructions" per input
    (SysTick ticks x 40 under -icount shift=0).
    """
    _toolchain(target)
    cmd = qemu_command(elf) if target == "mps2-an386" else [os.fspath(elf)]
    started = time.monotonic()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as late:
        raise FirmwareError(f"the firmware did not finish within {timeout} s ({' '.join(cmd)}); it printed: "
                            f"{(late.stdout or b'')[-2000:]!r}") from None
    log = done.stdout + done.stderr  # QEMU writes semihosting output to stderr
    result = {**parse_output(log), "exit_code": done.returncode,
              "seconds": time.monotonic() - started, "log": log, "target": target}
    if target == "mps2-an386":
        result["instructions"] = [t * INSTRUCTIONS_PER_TICK for t in result["ticks"]]
    if done.returncode and not result["outputs"].size:
        raise FirmwareError(f"the firmware exited with status {done.returncode} and printed no outputs:\n{log[-3000:]}")
    return result


def benchmark(model_dir, tflm_tree, target: str = "mps2-an386", *, inputs=None, expected=None,
              tensor_checksums: bool = False, out_dir=None, cache_dir=None, jobs: int | None = None,
              timeout: float = 600) -> dict:
    """build_firmware + run_firmware: outputs, pass/fail, arena used, size, instruction counts."""
    built = build_firmware(model_dir, tflm_tree, target, out_dir=out_dir, inputs=inputs, expected=expected,
                           tensor_checksums=tensor_checksums, cache_dir=cache_dir, jobs=jobs)
    ran = run_firmware(built["elf"], target, timeout=timeout)
    return {**ran, "kernels": built["kernels"], "elf": built["elf"], "size": built["size"],
            "build_seconds": built["seconds"], "library_seconds": built["library_seconds"]}
