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
import time

DEVICE_DIR = "/data/local/tmp"
# The benchmark APK of tools/android_apk/ and TFLite's own one (models pushed, not packaged).
APK_ACTIVITY = "com.kerasnets.benchmark/.BenchmarkActivity"
STOCK_APK_ACTIVITY = "org.tensorflow.lite.benchmark/.BenchmarkModelActivity"
APK_SOURCES = os.path.join(os.path.dirname(__file__), "android_apk")
APK_PACKAGE = "tools/android_apk"  # its Bazel package in the project's workspace (WORKSPACE at the root)
PACKAGED = "asset:"  # --tflite asset:NAME.tflite: a model packaged in the kerasnets APK
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


# the columns of results/bench-android-*.csv: result_row's keys, and the text of a failed config
COLUMNS = ["model", "config", "threads", "device", "init_ms", "first_inference_ms", "warmup_avg_ms",
           "latency_ms_avg", "latency_ms_min", "latency_ms_max", "latency_ms_std", "latency_ms_median",
           "latency_ms_p95", "runs", "peak_memory_mb", "memory_overall_mb", "error"]


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
                             "(or pass `adb=/path/to/adb`)")
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
                             "debugging enabled, or pass `serial`") from None
        if state != "device":
            raise ValueError(f"adb device state is {state!r}, not 'device': unlock it and accept "
                             "the USB debugging prompt")
        return self.call("shell", "getprop", "ro.product.model").strip()

    def push(self, local: str, remote: str) -> None:
        self.call("push", local, remote)

    def shell(self, *args) -> str:
        """Run a device command; each argument is quoted for the device's shell."""
        return self.call("shell", " ".join(shlex.quote(str(a)) for a in args))


def _benchmark_args(graph: str, threads: int, runs: int, config: str) -> list[str]:
    return [f"--graph={graph}", f"--num_threads={threads}", f"--num_runs={runs}",
            "--report_peak_memory_footprint=true", *CONFIGS[config]]


def _sweep(configs, threads):
    """(config, threads) pairs: thread counts only matter on the CPU paths."""
    return [(c, n) for c in configs for n in (threads if c in ("cpu", "xnnpack") else threads[:1])]


def _run_rows(device, name, runs_to_do, run_one) -> list[dict]:
    """A delegate the phone lacks (no GPU/NNAPI driver) fails in benchmark_model: that config's row
    carries the error instead of figures, and the others still run."""
    rows = []
    for config, n in runs_to_do:
        try:
            rows.append(result_row(parse_benchmark_log(run_one(config, n)), model=name, config=config,
                                   threads=n, device=device))
        except (RuntimeError, ValueError) as error:
            rows.append({"model": name, "config": config, "threads": n, "device": device,
                         "error": str(error)[:300]})
    return rows


def _model_name(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def _require_file(local: str) -> None:
    if not os.path.isfile(local):
        raise ValueError(f"model file {local} does not exist")


def run_benchmarks(adb: Adb, models: list[str], benchmark_binary: str, *, threads=(1, 4),
                   configs=("cpu", "xnnpack", "gpu", "nnapi"), runs: int = 50) -> list[dict]:
    """Push the native benchmark_model and the models, run every config, return parsed rows."""
    device = adb.require_device()
    remote_binary = f"{DEVICE_DIR}/benchmark_model"
    adb.push(benchmark_binary, remote_binary)
    adb.shell("chmod", "755", remote_binary)
    rows = []
    for local in models:
        _require_file(local)
        remote = f"{DEVICE_DIR}/{os.path.basename(local)}"
        adb.push(local, remote)
        rows += _run_rows(device, _model_name(local), _sweep(configs, threads),
                          lambda c, n: adb.shell(remote_binary, *_benchmark_args(remote, n, runs, c)))
    return rows


def run_apk_benchmarks(adb: Adb, models: list[str], apk: str, *, activity: str = APK_ACTIVITY,
                       threads=(1, 4), configs=("cpu", "xnnpack", "gpu", "nnapi"), runs: int = 50,
                       timeout: float = 600, poll: float = 1.0, start_grace: float = 10.0) -> list[dict]:
    """Install a benchmark APK and run every config from its activity, reading logcat.

    `models` are local .tflite files (pushed to /data/local/tmp) or `asset:NAME.tflite` for a model
    packaged in the kerasnets APK. `am start` returns before the benchmark ends, so the runner
    polls logcat until the timings line or a failure line appears.
    """
    if not os.path.isfile(apk):
        raise ValueError(f"APK {apk} does not exist: build it (see tools/android_apk/BUILD) or pass "
                         f"TFLite's benchmark_model.apk with `activity={STOCK_APK_ACTIVITY}`")
    device = adb.require_device()
    adb.call("install", "-r", "-d", "-g", apk)
    rows = []
    for model in models:
        packaged = model.startswith(PACKAGED)
        graph = model if packaged else f"{DEVICE_DIR}/{os.path.basename(model)}"
        if any(c.isspace() for c in graph):
            raise ValueError(f"model name {graph!r} has a space: the benchmark APK splits its arguments "
                             "on whitespace, so rename the file")
        if not packaged:
            _require_file(model)
            adb.push(model, graph)
        run_one = lambda c, n: _run_activity(adb, activity, _benchmark_args(graph, n, runs, c),
                                             timeout, poll, start_grace)  # noqa: E731
        rows += _run_rows(device, _model_name(model.removeprefix(PACKAGED)), _sweep(configs, threads), run_one)
    return rows


_TIMINGS = "Inference timings in us"
_FAILED = "Benchmarking failed"


def _run_activity(adb: Adb, activity: str, args: list[str], timeout: float, poll: float,
                  start_grace: float) -> str:
    """Start the activity and return its logcat once the benchmark has finished.

    Finished means the timings line, a failure line, or the app's process gone (TFLite's own APK
    ends silently on some failures) after `start_grace` seconds to start.
    """
    adb.call("logcat", "-c")
    # The argument string travels as one extra; adb.shell quotes it once for the device's shell.
    adb.shell("am", "start", "-S", "-n", activity, "--es", "args", " ".join(args))
    started, deadline = time.monotonic(), time.monotonic() + timeout
    while True:
        log = adb.call("logcat", "-d", "-s", "tflite:V")
        if _TIMINGS in log:
            return log
        ended = _FAILED in log or (time.monotonic() - started > start_grace
                                   and not _running(adb, activity.split("/")[0]))
        if ended:
            errors = [line.split("tflite", 1)[-1].lstrip(" :") for line in log.splitlines()
                      if "ERROR" in line or _FAILED in line]
            raise RuntimeError("benchmark ended without timings: " + (" | ".join(errors) or
                               "no error in logcat (is the model readable by the app?)"))
        if time.monotonic() > deadline:
            raise RuntimeError(f"no benchmark result in logcat after {timeout:.0f} s "
                               f"({activity} {' '.join(args)}): is the screen on and unlocked?")
        time.sleep(poll)


def _running(adb: Adb, package: str) -> bool:
    try:
        return bool(adb.shell("pidof", package).strip())
    except RuntimeError:  # pidof exits 1 when there is no such process
        return False


def stage_apk(workspace: str, tflite_files: list[str]) -> dict:
    """Package models into the benchmark APK of a kerasnets source tree (the folder with its Bazel
    `WORKSPACE`, which brings TensorFlow in as @org_tensorflow).

    Returns the Bazel target, the build command (run from `workspace`) and where the APK lands.
    Models are checked to be TFLite files first; the package's old models are replaced, not merged.
    """
    from kerasnets.pipelines import tflite_file

    workspace_file = os.path.join(workspace, "WORKSPACE")
    package = os.path.join(workspace, APK_PACKAGE)
    if not (os.path.isfile(workspace_file) and os.path.isfile(os.path.join(package, "BUILD"))):
        raise ValueError(f"`workspace={workspace}` is not a kerasnets source tree (no WORKSPACE and "
                         f"{APK_PACKAGE}/BUILD): pass the folder of a `git clone` of kerasnets, e.g. `.` "
                         "from its root")
    if not tflite_files:
        raise ValueError("no models to package: pass `tflite_files`")
    names = [os.path.basename(f) for f in tflite_files]
    if len(set(names)) != len(names):
        raise ValueError(f"two models share a file name ({names}); assets are looked up by name")
    for path in tflite_files:
        tflite_file.read_tflite_file(path)
    models_dir = os.path.join(package, "assets", "models")
    shutil.rmtree(models_dir, ignore_errors=True)
    os.makedirs(models_dir)
    for path in tflite_files:
        shutil.copyfile(path, os.path.join(models_dir, os.path.basename(path)))
    target = f"//{APK_PACKAGE}:kerasnets_benchmark"
    return {"package": package, "models": [PACKAGED + n for n in names], "target": target,
            "build": f"bazel build --config=android_arm64 {target}",
            "apk": f"bazel-bin/{APK_PACKAGE}/kerasnets_benchmark.apk"}
