"""Host benchmark: LiteRT latency and peak memory of .tflite models, against this machine's peak.

Each measurement runs in a fresh child process that imports only the LiteRT interpreter, so its
peak RSS is the model's footprint (not TensorFlow's) and runs do not disturb each other.
"""
from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

from kerasnets.pipelines.files import write_atomic
# The machine description lives in pipelines (training asks it too); re-exported for benchmarks.
from kerasnets.pipelines.machine import isa_features, machine_name, machine_slug, slug  # noqa: F401
from kerasnets.tools import bench_child
from kerasnets.tools.bench_child import time_invokes

TARGETS = ("host", "android", "cortex-m4", "ethos-u55-128", "ethos-u65-256")  # where `kerasnets bench` runs a model
COLUMNS = ["model", "input", "mode", "threads", "xnnpack", "xnnpack_partitions", "ops_outside_xnnpack",
           "xnnpack_op_share", "latency_ms_median", "latency_ms_p90", "peak_rss_mb", "macs", "gmacs_per_s",
           "peak_fraction", "machine", "command"]


def litert_latency_ms(tflite: bytes, *, threads: int = 1, runs: int = 50, warmup: int = 5) -> dict:
    """In-process timing (default kernels, XNNPACK), for callers that already hold the model."""
    return time_invokes(tflite, threads=threads, runs=runs, warmup=warmup)


def measure_in_child(tflite: bytes, *, threads: int, runs: int, xnnpack: bool) -> dict:
    """Time the model in a fresh process; adds that process's peak RSS in MB."""
    with tempfile.NamedTemporaryFile(suffix=".tflite") as f:
        f.write(tflite)
        f.flush()
        # Run by path, not as a package module: the child must not import TensorFlow.
        cmd = [sys.executable, bench_child.__file__, f.name, str(threads), str(runs),
               "1" if xnnpack else "0"]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    if done.returncode:
        raise RuntimeError(f"benchmark process failed: {done.stderr[-1000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def keras_latency_in_child(keras_file: str, *, threads: int, runs: int) -> dict:
    """fp32 Keras latency (batch 1, tf.function) of a saved model in a fresh process with
    `threads` TensorFlow threads; adds that process's peak RSS in MB (TensorFlow included)."""
    cmd = [sys.executable, "-m", "kerasnets.tools.keras_child", keras_file, str(threads), str(runs)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    if done.returncode:
        raise RuntimeError(f"Keras timing process failed: {done.stderr[-1000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def dense_conv_peak_gmacs(threads: int = 1) -> float:
    """This machine's int8 throughput on a 3x3 64->64 conv at 56x56 (GMAC/s): the roofline that
    each model's throughput is quoted against."""
    import tf_keras as keras

    from kerasnets.pipelines import convert

    inp = keras.Input((56, 56, 64))
    model = keras.Model(inp, keras.layers.Conv2D(64, 3, padding="same")(inp))
    calibration = np.random.default_rng(0).normal(size=(4, 56, 56, 64)).astype("float32")
    tflite = convert.to_int8(model, calibration)
    macs = 56 * 56 * 64 * 9 * 64
    timing = measure_in_child(tflite, threads=threads, runs=100, xnnpack=True)
    return macs / (timing["median"] * 1e-3) / 1e9


_PEAK_CACHE = {}


def peak_gmacs(threads: int) -> float:
    """dense_conv_peak_gmacs, measured once per thread count per process."""
    if threads not in _PEAK_CACHE:
        _PEAK_CACHE[threads] = dense_conv_peak_gmacs(threads)
    return _PEAK_CACHE[threads]


def timing_row(name: str, input_shape, mode: str, *, threads: int, xnnpack: bool, timing: dict, macs: int,
               command: str = "") -> dict:
    """One results row (COLUMNS) from a measured timing: throughput against this machine's peak."""
    gmacs = macs / (timing["median"] * 1e-3) / 1e9 if timing["median"] > 0 else 0.0
    return {
        "model": name, "input": "x".join(str(d) for d in input_shape), "mode": mode,
        "threads": threads, "xnnpack": xnnpack, "xnnpack_partitions": timing.get("xnnpack_partitions", ""),
        "ops_outside_xnnpack": timing.get("ops_outside_xnnpack", ""), "xnnpack_op_share": "",
        "latency_ms_median": round(timing["median"], 4),
        "latency_ms_p90": round(timing["p90"], 4), "peak_rss_mb": timing["peak_rss_mb"], "macs": macs,
        "gmacs_per_s": round(gmacs, 2), "peak_fraction": round(gmacs / peak_gmacs(threads), 3),
        "machine": machine_name(), "command": command,
    }


def host_row(named_model, *, threads: int = 1, runs: int = 50, xnnpack: bool = True,
             command: str = "") -> dict:
    """One results row for a (name, .tflite bytes) pair on this machine."""
    from kerasnets.pipelines import tflite_file

    name, tflite = named_model
    graph = tflite_file.read_tflite(tflite, source=name)
    timing = measure_in_child(tflite, threads=threads, runs=runs, xnnpack=xnnpack)
    row = timing_row(name, graph.inputs[0].shape[1:], tflite_file.describe_mode(graph), threads=threads,
                     xnnpack=xnnpack, timing=timing, macs=tflite_file.graph_macs(graph), command=command)
    if xnnpack:
        row["xnnpack_op_share"] = xnnpack_op_share(timing["ops_outside_xnnpack"], len(graph.ops))
    return row


def xnnpack_op_share(ops_outside: str, ops: int) -> float:
    """The share of a graph's `ops` XNNPACK runs, from `ops_outside_xnnpack`'s "OP:count" list."""
    return round(1 - sum(int(item.rsplit(":", 1)[1]) for item in ops_outside.split()) / ops, 3)


class LoadMonitor:
    """Samples the 1-minute load average in a background thread while a measurement runs, so a
    result can say whether other work shared the cores (`with LoadMonitor() as load: ...;
    load.conditions()`)."""

    def __init__(self, every: float = 10.0):
        import threading

        self.every, self.samples = every, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self):
        while True:
            self.samples.append(os.getloadavg()[0])
            if self._stop.wait(self.every):
                return

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def conditions(self) -> str:
        """'load average up to L on N cores': near N or below, the measurement had the cores to itself."""
        return f"load average up to {max(self.samples, default=0.0):.1f} on {os.cpu_count()} cores"


def models_recorded_here(path: str, **same) -> set[str]:
    """The `model` column of the CSV's rows measured on this machine (none when there is no file),
    and with the column values given in `same` where given (a row without the column does not
    count): what a benchmark that appends rows skips."""
    if not os.path.exists(path):
        return set()
    return {r["model"] for r in _read_csv(path)[1]
            if r.get("machine") == machine_name() and all(r.get(k) == str(v) for k, v in same.items())}


def _read_csv(path: str) -> tuple[list[str], list[dict]]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def append_rows(rows: list[dict], path: str, columns) -> None:
    """Append rows to a CSV under the header `columns` (the table's documented columns, never
    taken from a row: an error row has none of the figures). A file whose header differs is
    rewritten with the union of both headers, so no value lands under another column."""
    columns = list(columns)
    if not os.path.exists(path):
        existing, header = [], columns
    else:
        with open(path, newline="", encoding="utf-8") as f:
            header = next(csv.reader(f), [])
        if set(columns) <= set(header):  # every column has its place: append, no rewrite
            with open(path, "a", newline="", encoding="utf-8") as out:
                csv.DictWriter(out, fieldnames=header, extrasaction="ignore").writerows(rows)
            return
        header, existing = _read_csv(path)
        header = header + [c for c in columns if c not in header]
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=header, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(existing + list(rows))
    write_atomic(path, text.getvalue())
