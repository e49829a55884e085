"""Run int8 models in the TFLite Micro interpreter and measure the tensor arena they need."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import zlib

import numpy as np
from tflite_micro.python.tflite_micro import runtime

_ARENA_TOTAL = re.compile(rb"Arena allocation total (\d+) bytes")


def _capture_stderr(fn):
    """Run fn() with the process's fd 2 sent to a file (TFLM prints from C++) and return it."""
    with tempfile.TemporaryFile() as sink:
        saved = os.dup(2)
        try:
            os.dup2(sink.fileno(), 2)
            fn()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        sink.seek(0)
        return sink.read()


def micro_interpreter(tflite: bytes, arena_size: int | None = None) -> runtime.Interpreter:
    """TFLite Micro interpreter (all builtin ops registered) for int8 model bytes."""
    return runtime.Interpreter.from_bytes(bytes(tflite), arena_size=arena_size)


def run_micro(tflite: bytes, inputs: np.ndarray) -> np.ndarray:
    """Outputs of TFLite Micro for each item of `inputs` (already quantised, batch axis first)."""
    interpreter = micro_interpreter(tflite)
    outputs = []
    for item in inputs:
        interpreter.set_input(item[None], 0)
        interpreter.invoke()
        outputs.append(interpreter.get_output(0)[0].copy())
    return np.stack(outputs)


def measure_arena(tflite: bytes, arena_size: int | None = None) -> int:
    """Bytes of tensor arena TFLite Micro's recording allocator uses for one inference.

    Everything, kernels' scratch buffers included, is planned when the interpreter allocates its
    tensors, so no inference is run: an inference depends on the input, and TFLite Micro's int8
    softmax aborted the whole process in Eval on the near-uniform 1000-class logits of an
    untrained ghostnet_050 fed a zero input.
    """
    interpreter = micro_interpreter(tflite, arena_size)
    report = _capture_stderr(interpreter.print_allocations)
    match = _ARENA_TOTAL.search(report)
    if not match:
        raise RuntimeError(f"TFLite Micro printed no arena total; it printed: {report[:500]!r}")
    return int(match.group(1))


class MicroCrash(RuntimeError):
    """TFLite Micro ended the process that ran it (an abort in a kernel, a signal, an error exit)."""


def _run_child(args: list[str], what: str, timeout: float) -> str:
    """Run this file in a fresh process with `args`; its stdout, or a MicroCrash naming the crash."""
    # Run by path, not as a package module: the child must not import TensorFlow.
    done = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, timeout=timeout)
    if done.returncode:
        cause = (f"killed by {signal.Signals(-done.returncode).name}" if done.returncode < 0
                 else f"exit status {done.returncode}")
        raise MicroCrash(f"TFLite Micro {what} failed ({cause}): {done.stderr[-800:]}")
    return done.stdout


def measure_arena_in_child(tflite: bytes, timeout: float = 1800) -> int:
    """measure_arena in a fresh process. TFLite Micro aborts the whole process on some failures
    (and its allocator state can outlive an interpreter), so a long loop over many models, like
    `kerasnets zoo`, measures each one in isolation and turns a crash into an exception."""
    with tempfile.TemporaryDirectory() as work:
        model_file = os.path.join(work, "model.tflite")
        with open(model_file, "wb") as f:
            f.write(tflite)
        return int(_run_child(["arena", model_file], "arena measurement", timeout).split()[-1])


def _in_child(command: str, tflite: bytes, arrays: list[np.ndarray], what: str, timeout: float) -> np.ndarray:
    """Run `command` of this file in a fresh process on the model and `arrays` (saved as .npy);
    the array it saves, or a MicroCrash naming the crash."""
    with tempfile.TemporaryDirectory() as work:
        model_file, output_file = os.path.join(work, "model.tflite"), os.path.join(work, "out.npy")
        with open(model_file, "wb") as f:
            f.write(tflite)
        array_files = [os.path.join(work, f"in{n}.npy") for n in range(len(arrays))]
        for path, array in zip(array_files, arrays):
            np.save(path, array)
        _run_child([command, model_file, *array_files, output_file], what, timeout)
        return np.load(output_file)


def run_micro_in_child(tflite: bytes, inputs: np.ndarray, timeout: float = 1800) -> np.ndarray:
    """run_micro in a fresh process: an abort inside a kernel (TFLite Micro asserts rather than
    returning an error) becomes a MicroCrash instead of ending the caller."""
    return _in_child("run", tflite, [inputs], "inference", timeout)


def tensor_values(tflite: bytes, item: np.ndarray, indices) -> list[np.ndarray]:
    """The data of each tensor in `indices` (subgraph 0, flat) after one inference on `item`, with
    TFLite Micro keeping every tensor (its preserve-all-tensors mode, which the firmware's
    KN_TENSOR_CHECKSUMS build uses too)."""
    interpreter = runtime.Interpreter.from_bytes(
        bytes(tflite), intrepreter_config=runtime.InterpreterConfig.kPreserveAllTensors)
    interpreter.set_input(item[None], 0)
    interpreter.invoke()
    # copies: the arrays TFLite Micro hands out view its arena, which goes with the interpreter
    return [np.array(interpreter.GetTensor(int(index), 0)["tensor_data"], copy=True, order="C") for index in indices]


def tensor_checksums(tflite: bytes, item: np.ndarray, indices) -> np.ndarray:
    """(byte length, CRC-32 of the bytes) of each tensor in `indices` (`tensor_values`)."""
    rows = [(len(data), zlib.crc32(data)) for data in map(np.ndarray.tobytes, tensor_values(tflite, item, indices))]
    return np.array(rows, np.int64).reshape(-1, 2)


def tensor_checksums_in_child(tflite: bytes, item: np.ndarray, indices, timeout: float = 1800) -> np.ndarray:
    """tensor_checksums in a fresh process (an abort becomes a MicroCrash)."""
    return _in_child("checksums", tflite, [item, np.asarray(indices, np.int64)], "tensor checksums", timeout)


def _child_main(command: str, model_path: str, *paths: str) -> None:
    """`arena MODEL` prints the arena; `run MODEL IN.npy OUT.npy` and `checksums MODEL ITEM.npy
    INDICES.npy OUT.npy` save their results."""
    with open(model_path, "rb") as model_file:
        model_bytes = model_file.read()
    if command == "arena":
        print(measure_arena(model_bytes))
    elif command == "run":
        np.save(paths[1], run_micro(model_bytes, np.load(paths[0])))
    elif command == "checksums":
        np.save(paths[2], tensor_checksums(model_bytes, np.load(paths[0]), np.load(paths[1])))
    else:
        raise SystemExit(f"unknown child command {command!r}: expected arena, run or checksums")


if __name__ == "__main__":
    _child_main(*sys.argv[1:])
