"""Benchmark: every registry model at its default input on this host — fp32 Keras vs fp32 TFLite
vs int8 TFLite latency at 1 and 2 threads, against this machine's dense-conv peak; appends rows
to results/bench-host-<machine_slug>.csv (a model whose six rows are there already is skipped, so an
interrupted run continues where it stopped).

    .venv/bin/python benchmarks/host.py                          # the whole registry
    .venv/bin/python benchmarks/host.py --filter '*_cifar' --runs 20

Weights are untrained (BatchNorm statistics set from the calibration images): latency does not
depend on the values. Each figure is measured in a fresh process (LiteRT: `bench.measure_in_child`
with XNNPACK; Keras: `bench.keras_latency_in_child`, a tf.function at batch 1), median of --runs.
"""
from __future__ import annotations

import csv
import os
import shlex
import sys
import tempfile
from pathlib import Path

from absl import app, flags, logging

import kerasnets
from kerasnets.pipelines import convert, data
from kerasnets.tools import bench

REPO = Path(__file__).resolve().parents[1]
FLAGS = flags.FLAGS
flags.DEFINE_string("filter", "*", "wildcard over registry names")
flags.DEFINE_list("threads", ["1", "2"], "thread counts to measure")
flags.DEFINE_integer("runs", 30, "timed invocations per figure (median and p90 reported)", lower_bound=1)
flags.DEFINE_string("out", None, "CSV file (default results/bench-host-<machine_slug>.csv: CPU model and cores)")

MODES = ("keras-fp32", "fp32", "int8")
CALIBRATION_IMAGES = 16


def _done(path: str, machine: str) -> set[tuple[str, str, str]]:
    """(model, mode, threads) already measured on `machine`: the file is named by CPU model and
    cores only, so it can hold rows of machines whose ISA features differ."""
    if not os.path.exists(path):
        return set()
    with open(path, newline="", encoding="utf-8") as table:
        return {(r["model"], r["mode"], r["threads"]) for r in csv.DictReader(table) if r["machine"] == machine}


def _keras_row(name, model, keras_file, threads, command):
    timing = bench.keras_latency_in_child(keras_file, threads=threads, runs=FLAGS.runs)
    return bench.timing_row(name, model.input_shape[1:], "keras-fp32", threads=threads, xnnpack=False,
                            timing=timing, macs=kerasnets.profile(model)["macs"], command=command)


def measure(name: str, threads: list[int], command: str) -> list[dict]:
    model = kerasnets.create_model(name)
    images, _ = data.digits_images(model.input_shape[1:], CALIBRATION_IMAGES)
    convert.calibrate_batchnorm(model, images)
    rows = []
    with tempfile.TemporaryDirectory() as work:
        keras_file = os.path.join(work, f"{name}.keras")
        model.save(keras_file)
        rows += [_keras_row(name, model, keras_file, n, command) for n in threads]
    for mode in ("fp32", "int8"):
        tflite = convert.export(model, mode, images)
        rows += [bench.host_row((name, tflite), threads=n, runs=FLAGS.runs, command=command) for n in threads]
    return rows


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # TensorFlow's SavedModel writer logs every save
    out = FLAGS.out or str(REPO / "results" / f"bench-host-{bench.machine_slug()}.csv")
    threads = [int(t) for t in FLAGS.threads]
    command = shlex.join([Path(sys.executable).name, *sys.argv])
    done = _done(out, bench.machine_name())
    for name in kerasnets.list_models(FLAGS.filter):
        if all((name, mode, str(n)) in done for mode in MODES for n in threads):
            continue
        rows = measure(name, threads, command)
        bench.append_rows(rows, out, bench.COLUMNS)
        by_mode = {(r["mode"], r["threads"]): r["latency_ms_median"] for r in rows}
        print(f"{name}: " + ", ".join(f"{m} x{n} {by_mode[(m, n)]:.3g} ms" for m in MODES for n in threads),
              flush=True)


if __name__ == "__main__":
    app.run(main)
