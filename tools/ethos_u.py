"""Ethos-U NPU benchmark without hardware: compile an int8 .tflite with Arm's Vela compiler and
report which ops it maps to the NPU, which stay on the CPU, SRAM and flash use, and Vela's own
cycle and time estimate.

Vela (PyPI `ethos-u-vela`, the `npu` extra) is run as its command line: the `vela` executable
beside this Python, on PATH, or named by $KERASNETS_VELA (e.g. one in its own virtualenv). The
system configuration and memory mode come from Vela's bundled Arm/vela.ini; `est_ms` is Vela's
`inference_time`, i.e. its cycle estimate at that configuration's core clock. Op placement is read
off the compiled model: every op Vela did not fold into an ethos-u custom op runs on the CPU.
"""
from __future__ import annotations

import csv
import glob
import os
import shutil
import subprocess
import sys
import tempfile

VELA_ENV = "KERASNETS_VELA"
# accelerator -> (system config, memory mode) from Vela's Arm/vela.ini
CONFIGS = {
    "ethos-u55-128": ("Ethos_U55_High_End_Embedded", "Shared_Sram"),
    "ethos-u65-256": ("Ethos_U65_High_End", "Dedicated_Sram"),
}
TARGETS = tuple(CONFIGS)
_NPU_OP = "CUSTOM:ethos-u"


def vela_executable() -> str:
    """$KERASNETS_VELA, else `vela` beside this Python (its virtualenv), else on PATH."""
    named = os.environ.get(VELA_ENV)
    beside = os.path.join(os.path.dirname(sys.executable), "vela")
    for candidate in (named, beside if os.path.exists(beside) else None, shutil.which("vela")):
        if candidate:
            return candidate
    raise RuntimeError("Vela is not installed: pip install 'kerasnets[npu]' (ethos-u-vela), or set "
                       f"${VELA_ENV} to a vela executable")


def _run(args, cwd) -> str:
    done = subprocess.run([vela_executable()] + args, capture_output=True, text=True, cwd=cwd,
                          timeout=1800)
    if done.returncode:
        raise RuntimeError(f"vela {' '.join(args)} failed: {(done.stderr or done.stdout)[-1500:]}")
    return done.stdout


def vela_version() -> str:
    return _run(["--version"], None).strip()


def _summary(out_dir) -> dict:
    [path] = glob.glob(os.path.join(out_dir, "*_summary_*.csv"))
    with open(path, newline="", encoding="utf-8") as f:
        return next(csv.DictReader(f))


def ethos_u_row(named_model, *, target: str = "ethos-u55-128") -> dict:
    """One result for a (name, int8 .tflite bytes) pair compiled by Vela for `target`."""
    from kerasnets.micro.lint import layer_of
    from kerasnets.pipelines import tflite_file

    if target not in CONFIGS:
        raise ValueError(f"`target` must be one of {', '.join(CONFIGS)}, got {target!r}")
    name, tflite = named_model
    system, memory = CONFIGS[target]
    with tempfile.TemporaryDirectory(prefix="kn-vela-") as work:
        model = os.path.join(work, f"{name}.tflite")
        with open(model, "wb") as f:
            f.write(tflite)
        out = os.path.join(work, "out")
        _run([model, "--accelerator-config", target, "--system-config", system, "--memory-mode", memory,
              "--output-dir", out], work)
        summary = _summary(out)
        with open(os.path.join(out, f"{name}_vela.tflite"), "rb") as f:
            compiled = tflite_file.read_tflite(f.read(), source=f"{name}_vela")
    original = tflite_file.read_tflite(tflite, source=name)
    cpu = [op for op in compiled.ops if op.name != _NPU_OP]
    kib = lambda key: int(round(float(summary[key]) * 1024))  # noqa: E731  (Vela reports KiB)
    return {
        "model": name, "target": target, "accelerator": summary["accelerator_configuration"],
        "system_config": system, "memory_mode": memory,
        "npu_ops": len(original.ops) - len(cpu), "cpu_ops": [f"{op.name} ({layer_of(op)})" for op in cpu],
        "npu_subgraphs": sum(op.name == _NPU_OP for op in compiled.ops),
        "sram_bytes": kib("sram_memory_used"),
        "flash_bytes": kib("off_chip_flash_memory_used") + kib("on_chip_flash_memory_used"),
        "dram_bytes": kib("dram_memory_used"),
        "cycles": int(float(summary["cycles_total"])), "clock_mhz": float(summary["core_clock"]) / 1e6,
        "est_ms": round(float(summary["inference_time"]) * 1e3, 4), "macs": int(float(summary["nn_macs"])),
        "vela": vela_version(),
    }
