"""`kerasnets zoo`: every registered model's size, int8 footprint and host latency in one table."""
from __future__ import annotations

import csv
import io
import os
import warnings

from kerasnets import create_model, list_models, model_info, profile
from kerasnets.micro import arena, lint
from kerasnets.pipelines import convert, data, tflite_file
from kerasnets.pipelines.files import write_atomic
from kerasnets.tools import bench

COLUMNS = ["model", "input", "params", "macs", "published_params", "published_macs", "size_ok",
           "int8_kb", "arena_bytes", "latency_ms", "machine"]
SIZE_TOLERANCE = 0.05
CALIBRATION_IMAGES = 16


def _within(measured, published):
    return abs(measured - published) <= SIZE_TOLERANCE * published


def zoo_row(name: str, input_size: int | None = None, *, runs: int = 30, machine: str = "") -> dict:
    """Measure one model: params/MACs from the profiler, int8 size, TFLM arena, LiteRT latency.

    size_ok compares params and MACs with the published figures at the default input; at another
    input size only params are comparable, so only params are checked.
    """
    info = model_info(name)
    shape = info.input_shape if input_size is None else (input_size, input_size, info.input_shape[2])
    model = create_model(name, input_shape=shape)
    stats = profile(model)
    at_default = tuple(shape) == info.input_shape
    size_ok = _within(stats["params"], info.params) and (not at_default or _within(stats["macs"], info.macs))
    images, _ = data.digits_images(shape, CALIBRATION_IMAGES)
    convert.calibrate_batchnorm(model, images)  # untrained weights: give int8 real ranges
    tflite = convert.to_int8(model, images)
    # Both measurements run in child processes: TFLite Micro can abort its process, and one
    # model's interpreter must not leave state behind for the next.
    latency = bench.measure_in_child(tflite, threads=1, runs=runs, xnnpack=True)
    arena_bytes = _arena_or_blank(name, tflite)
    return {
        "model": name, "input": "x".join(str(d) for d in shape),
        "params": stats["params"], "macs": stats["macs"],
        "published_params": int(info.params), "published_macs": int(info.macs),
        "size_ok": size_ok, "int8_kb": round(len(tflite) / 1024, 1),
        "arena_bytes": arena_bytes, "latency_ms": round(latency["median"], 3),
        "machine": machine,
    }


def _arena_or_blank(name: str, tflite: bytes):
    """The TFLite Micro arena, or "" with a warning naming why TFLite Micro cannot run the model
    (the deployment lint's errors, else the interpreter's crash)."""
    problems = lint.errors(lint.lint(tflite_file.read_tflite(tflite, source=name)))
    if problems:
        warnings.warn(f"{name}: no arena, TFLite Micro cannot run it: " + "; ".join(map(str, problems)))
        return ""
    try:
        return arena.measure_arena_in_child(tflite)
    except RuntimeError as error:
        warnings.warn(f"{name}: {error}")
        return ""


def read_csv(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path, newline="", encoding="utf-8") as table:
        return list(csv.DictReader(table))


def merge_row(path: str, row: dict) -> list[dict]:
    """Put `row` into the table at `path`, replacing the row of the same model and input, and
    save at once: a subset run updates its rows only, and an interrupted run keeps the rows done."""
    rows = [r for r in read_csv(path) if (r["model"], r["input"]) != (row["model"], row["input"])]
    rows.append(row)
    rows.sort(key=lambda r: (r["model"], r["input"]))
    write_csv(rows, path)
    return rows


def write_csv(rows: list[dict], path: str, columns=COLUMNS) -> None:
    """Write atomically: an interrupted run never leaves a half-written table."""
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=list(columns))
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(path, text.getvalue())


def select(pattern: str) -> list[str]:
    names = list_models(pattern)
    if not names:
        raise ValueError(f"`pattern={pattern}` matches no model; try one of: {', '.join(list_models())}")
    return names
