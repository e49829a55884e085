"""Host benchmark: LiteRT latency of a .tflite model, and the name of the machine that ran it."""
from __future__ import annotations

import os
import platform
import time

import numpy as np

from kerasnets.pipelines import convert


def machine_name() -> str:
    """e.g. 'x86_64 AMD EPYC 7B13 (2 cores)': quoted beside every measured figure."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{platform.machine()} {cpu} ({os.cpu_count()} cores)"


def litert_latency_ms(tflite: bytes, *, threads: int = 1, runs: int = 50, warmup: int = 5) -> dict:
    """Median and p90 wall time (ms) of one LiteRT invoke (default kernels, XNNPACK) on zeros."""
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    interpreter = convert.litert_interpreter(tflite, threads=threads)
    inp = interpreter.get_input_details()[0]
    interpreter.set_tensor(inp["index"], np.zeros(inp["shape"], inp["dtype"]))
    for _ in range(warmup):
        interpreter.invoke()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        interpreter.invoke()
        times.append((time.perf_counter() - start) * 1e3)
    return {"median": float(np.median(times)), "p90": float(np.percentile(times, 90))}
