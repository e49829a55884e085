"""Android benchmark: run TFLite's `benchmark_model` on a phone over adb and parse what it prints.

Commands are argument lists (never a local shell string); arguments that reach the device's
shell are quoted one by one with shlex.quote. The parser reads the lines benchmark_model prints
(the native binary prefixes them with 'INFO: ', the APK logs them to logcat under tag 'tflite').
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess

DEVICE_DIR = "/data/local/tmp"
_NUM = r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?"
_COUNT = re.compile(r"count=(\d+)(.*)")
_FIELD = re.compile(rf"(\w+)=({_NUM})")
_PATTERNS = {
    "model_size_mb": re.compile(rf"The input model file size \(MB\): ({_NUM})"),
    "init_ms": re.compile(rf"Initialized session in ({_NUM})ms"),
    "timings": re.compile(rf"Inference timings in us: Init: ({_NUM}), First inference: ({_NUM}), "
                          rf"Warmup \(avg\): ({_NUM}), Inference \(avg\): ({_NUM})"),
    "memory_delta": re.compile(rf"Memory footprint delta from the start of the tool \(MB\): "
                               rf"init=({_NUM}) overall=({_NUM})"),
    "peak_memory_mb": re.compile(rf"Overall peak memory footprint \(MB\) via periodic monitoring: ({_NUM})"),
}

# Delegate configurations run by `bench --target android`: name -> benchmark_model flags.
CONFIGS = {
    "cpu": ["--use_xnnpack=false"],
    "xnnpack": ["--use_xnnpack=true"],
    "gpu": ["--use_gpu=true"],
    "nnapi": ["--use_nnapi=true"],
}


def _count_line(rest: str) -> dict:
    """'count=50 first=1 curr=2 min=1 max=3 avg=1.5e+03 std=2 p5=.. median=.. p95=..' or
    'count=50 curr=1234(all same)'."""
    fields = {k: float(v) for k, v in _FIELD.findall(rest)}
    if "(all same)" in rest and "curr" in fields:
        value = fields["curr"]
        fields.update({k: value for k in ("first", "min", "max", "avg")})
        fields["std"] = 0.0
    return fields


def parse_benchmark_log(text: str) -> dict:
    """Figures from benchmark_model output; missing lines give missing keys, never zeros.

    Times in microseconds as printed (init_ms in ms). `warmup` and `inference` hold the first and
    second `count=` lines (benchmark_model prints warm-up first, then the timed runs).
    """
    result, counts = {}, []
    for line in text.splitlines():
        match = _COUNT.search(line)
        if match:
            counts.append({"count": int(match.group(1)), **_count_line(match.group(2))})
            continue
        for key, pattern in _PATTERNS.items():
            found = pattern.search(line)
            if not found:
                continue
            values = [float(v) for v in found.groups()]
            if key == "timings":
                result.update(zip(("init_us", "first_inference_us", "warmup_avg_us",
                                   "inference_avg_us"), values))
            elif key == "memory_delta":
                result.update(memory_init_mb=values[0], memory_overall_mb=values[1])
            else:
                result[key] = values[0]
    if counts:
        result["warmup"] = counts[0]
        if len(counts) > 1:
            result["inference"] = counts[1]
    if "inference_avg_us" not in result and "inference" not in result:
        raise ValueError("no benchmark_model timings found: expected 'count=...' or 'Inference timings "
                         "in us: ...' lines (run benchmark_model to completion and save all its output)")
    return result


def result_row(parsed: dict, *, model: str, config: str, threads: int, device: str) -> dict:
    timed = parsed.get("inference", {})
    avg_us = parsed.get("inference_avg_us", timed.get("avg"))
    return {
        "model": model, "config": config, "threads": threads, "device": device,
        "init_ms": parsed.get("init_ms"), "first_inference_ms": _ms(parsed.get("first_inference_us")),
        "warmup_avg_ms": _ms(parsed.get("warmup_avg_us")), "latency_ms_avg": _ms(avg_us),
        "latency_ms_min": _ms(timed.get("min")), "latency_ms_max": _ms(timed.get("max")),
        "latency_ms_std": _ms(timed.get("std")), "latency_ms_median": _ms(timed.get("median")),
        "latency_ms_p95": _ms(timed.get("p95")), "runs": timed.get("count"),
        "peak_memory_mb": parsed.get("peak_memory_mb"), "memory_overall_mb": parsed.get("memory_overall_mb"),
    }


def _ms(us):
    return None if us is None else round(us / 1000.0, 4)


class Adb:
    """Thin adb wrapper; `run` is injectable so the command sequence can be checked."""

    def __init__(self, adb: str | None = None, serial: str | None = None, run=subprocess.run):
        self.adb = adb or os.environ.get("ADB") or shutil.which("adb")
        if not self.adb:
            raise ValueError("adb not found: install Android platform-tools and put adb on PATH "
                             "(or pass --adb /path/to/adb)")
        self.serial = serial
        self._run = run

    def _cmd(self, *args) -> list:
        return [self.adb, *(["-s", self.serial] if self.serial else []), *args]

    def call(self, *args, timeout=600) -> str:
        done = self._run(self._cmd(*args), capture_output=True, text=True, timeout=timeout)
        if done.returncode:
            raise RuntimeError(f"{' '.join(self._cmd(*args))} failed ({done.returncode}): "
                               f"{(done.stderr or done.stdout).strip()[-500:]}")
        return done.stdout

    def require_device(self) -> str:
        try:
            state = self.call("get-state", timeout=30).strip()
        except RuntimeError as error:
            raise ValueError(f"no Android device reachable over adb ({error}); connect one with USB "
                             "debugging enabled, or pass --serial") from None
        if state != "device":
            raise ValueError(f"adb device state is {state!r}, not 'device': unlock it and accept "
                             "the USB debugging prompt")
        return self.call("shell", "getprop", "ro.product.model").strip()

    def push(self, local: str, remote: str) -> None:
        self.call("push", local, remote)

    def shell(self, *args) -> str:
        """Run a device command; each argument is quoted for the device's shell."""
        return self.call("shell", " ".join(shlex.quote(str(a)) for a in args))


def run_benchmarks(adb: Adb, models: list[str], benchmark_binary: str, *, threads=(1, 4),
                   configs=("cpu", "xnnpack", "gpu", "nnapi"), runs: int = 50) -> list[dict]:
    """Push benchmark_model and the models, run every config, return parsed rows.

    A delegate the phone lacks (no GPU/NNAPI driver) fails in benchmark_model: that config's row
    carries the error instead of figures, and the others still run.
    """
    device = adb.require_device()
    remote_binary = f"{DEVICE_DIR}/benchmark_model"
    adb.push(benchmark_binary, remote_binary)
    adb.shell("chmod", "755", remote_binary)
    rows = []
    for local in models:
        if not os.path.isfile(local):
            raise ValueError(f"model file {local} does not exist")
        remote = f"{DEVICE_DIR}/{os.path.basename(local)}"
        adb.push(local, remote)
        name = os.path.splitext(os.path.basename(local))[0]
        for config in configs:
            for n in (threads if config in ("cpu", "xnnpack") else threads[:1]):
                args = [remote_binary, f"--graph={remote}", f"--num_threads={n}", f"--num_runs={runs}",
                        "--report_peak_memory_footprint=true", *CONFIGS[config]]
                try:
                    parsed = parse_benchmark_log(adb.shell(*args))
                    rows.append(result_row(parsed, model=name, config=config, threads=n, device=device))
                except (RuntimeError, ValueError) as error:
                    rows.append({"model": name, "config": config, "threads": n, "device": device,
                                 "error": str(error)[:300]})
    return rows
