"""Cortex-M4 benchmark without hardware: build the firmware for an int8 model, run it on QEMU's
mps2-an386 board, check its outputs against the tflite-micro Python interpreter, and report flash,
RAM, arena and instruction counts.

Instruction counts come from QEMU itself: `-icount shift=0` advances the virtual clock 1 ns per
executed instruction and the firmware times each inference with SysTick (see
`kerasnets.micro.firmware_build`). `est_ms` divides them by the clock, i.e. it assumes one cycle
per instruction: a real Cortex-M4 needs more for loads, multiply-accumulates and taken branches,
so it is a lower bound on the time, not a cycle-accurate figure.
"""
from __future__ import annotations

import os
import tempfile

import numpy as np

TARGET = "cortex-m4"
BOARD = "mps2-an386"  # QEMU's Cortex-M4F board
TFLM_TREE_ENV = "KERASNETS_TFLM_TREE"
DEFAULT_CLOCK_MHZ = 120.0  # the STM32L4R5 of MLPerf Tiny's published Cortex-M4 latencies


def _digit_inputs(tflite: bytes, count: int = 16) -> np.ndarray:
    """`count` real images (scikit-learn digits at the model's input shape), quantised for it."""
    from kerasnets.pipelines import convert, data

    details = convert.litert_interpreter(tflite, reference=True).get_input_details()[0]
    images = data.digits_images(tuple(int(d) for d in details["shape"][1:]), count)[0]
    return convert.quantize_input(images, details)


def resolve_tflm_tree(tflm_tree: str | None) -> str:
    tree = tflm_tree or os.environ.get(TFLM_TREE_ENV)
    if not tree:
        raise ValueError(f"`tflm_tree` is needed: a TFLite Micro tree (folder or .tar.gz made by "
                         f"create_tflm_tree.py), or set ${TFLM_TREE_ENV}")
    return tree


def cortex_m4_row(named_model, *, tflm_tree: str | None = None, kernels: str | None = None,
                  clock_mhz: float = DEFAULT_CLOCK_MHZ, cache_dir=None) -> dict:
    """One result for a (name, int8 .tflite bytes) pair on the emulated Cortex-M4."""
    from kerasnets.micro import codegen, firmware_build

    if clock_mhz <= 0:
        raise ValueError(f"`clock_mhz` must be positive, got {clock_mhz}")
    if kernels is not None and kernels not in firmware_build.KERNELS:
        raise ValueError(f"`kernels` must be one of {', '.join(firmware_build.KERNELS)}, got {kernels!r}")
    name, tflite = named_model
    tree = firmware_build.resolve_tree(resolve_tflm_tree(tflm_tree), cache_dir)
    if kernels is not None and firmware_build.tree_kernels(tree) != kernels:
        raise ValueError(f"`kernels`={kernels} but `tflm_tree` holds the "
                         f"{firmware_build.tree_kernels(tree)} kernels: pass the matching tree")
    with tempfile.TemporaryDirectory(prefix="kn-cortex-m4-") as work:
        bundle = os.path.join(work, "micro")
        # the golden pairs: real images whose outputs differ, so a firmware that ignored its input fails
        emitted = codegen.emit(tflite, bundle, name, golden_inputs=_digit_inputs(tflite))
        inputs, expected = emitted["golden_inputs"], emitted["golden_outputs"]
        result = firmware_build.benchmark(bundle, tree, BOARD, out_dir=os.path.join(work, "build"),
                                          cache_dir=cache_dir)
    instructions = int(np.mean(result["instructions"]))
    return {
        "model": name, "target": TARGET, "board": f"QEMU {BOARD}", "kernels": result["kernels"],
        "bit_exact": bool(result["passed"] and np.array_equal(result["outputs"], expected)),
        "inputs_checked": int(len(inputs)), "instructions": instructions,
        "instructions_per_input": [int(n) for n in result["instructions"]],
        "clock_mhz": clock_mhz, "est_ms": round(instructions / (clock_mhz * 1e3), 3),
        "flash_bytes": result["size"]["flash"], "ram_bytes": result["size"]["ram"],
        "arena_bytes_used": result["arena_used"], "arena_bytes": result["arena_size"],
    }
