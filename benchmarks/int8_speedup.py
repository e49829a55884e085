"""Benchmark: is int8 faster than fp32 on this CPU? One variant of every family, LiteRT with XNNPACK
(its default CPU path), 1 thread: fp32 and int8 as converted, and both lowered for XNNPACK
(`kerasnets.pipelines.xnnpack.lower_for_xnnpack`, what the app model ships, for this CPU: the
rewrites that pay only with int8 dot products are left out on one without them, column
`dot_product_rewrites`); appends rows to results/int8-vs-fp32.csv.

    .venv/bin/python benchmarks/int8_speedup.py                    # one variant per family
    .venv/bin/python benchmarks/int8_speedup.py --models resnet8,mobilenet_v3_small_100

The four models of a family are timed in turns (each in a fresh process, median of --runs
invokes; then again, --rounds times) and a figure is the median over the rounds, so load that
comes and goes hits all four: the speedups are ratios of figures measured in the same run, like
for like (`int8_speedup`: fp32 / int8 as converted; `lowered_speedup`: both lowered). Weights are
untrained, BatchNorm statistics set from digits (latency does not depend on the values). Each row
names the machine with the instruction-set features that decide int8 speed (AVX-512 VNNI /
AVX-VNNI, Arm dotprod) and the load it ran under.
"""
from __future__ import annotations

import shlex
import statistics
import sys
from pathlib import Path

from absl import app, flags, logging

import kerasnets
from kerasnets.pipelines import convert, data, machine, tflite_file, xnnpack
from kerasnets.tools import bench

REPO = Path(__file__).resolve().parents[1]
FLAGS = flags.FLAGS
flags.DEFINE_list("models", [], "registry names (default: the first variant of every family, by paper)")
flags.DEFINE_integer("rounds", 3, "turns over the four models", lower_bound=1)
flags.DEFINE_integer("runs", 30, "timed invokes per figure", lower_bound=1)
flags.DEFINE_string("out", str(REPO / "results" / "int8-vs-fp32.csv"), "CSV file rows are appended to")

COLUMNS = ["model", "input", "fp32_ms", "int8_ms", "fp32_lowered_ms", "int8_lowered_ms", "int8_speedup",
           "lowered_speedup", "int8_pieces", "int8_ops_outside", "lowered_pieces", "lowered_ops_outside",
           "lowered_op_share", "dot_product_rewrites", "rounds", "conditions", "machine", "command"]
CALIBRATION_IMAGES = 16


def _models(name: str) -> dict[str, bytes]:
    model = kerasnets.create_model(name)
    images, _ = data.digits_images(model.input_shape[1:], CALIBRATION_IMAGES)
    convert.calibrate_batchnorm(model, images)
    fp32, int8 = convert.export(model, "fp32"), convert.export(model, "int8", images)
    dot = machine.has_int8_dot_product()  # the lowering for this CPU
    return {"fp32": fp32, "int8": int8, "fp32_lowered": xnnpack.lower_for_xnnpack(fp32, int8_dot_product=dot),
            "lowered": xnnpack.lower_for_xnnpack(int8, int8_dot_product=dot)}


def _dot_product_rewrites() -> str:
    return "yes" if machine.has_int8_dot_product() else "no"


def measure(name: str, command: str) -> dict:
    models = _models(name)
    times, last = {kind: [] for kind in models}, {}
    with bench.LoadMonitor() as load:
        for _ in range(FLAGS.rounds):
            for kind, tflite in models.items():
                last[kind] = bench.measure_in_child(tflite, threads=1, runs=FLAGS.runs, xnnpack=True)
                times[kind].append(last[kind]["median"])
    ms = {kind: statistics.median(values) for kind, values in times.items()}
    graph = tflite_file.read_tflite(models["lowered"])
    outside = last["lowered"]["ops_outside_xnnpack"]
    return {
        "model": name, "input": "x".join(str(d) for d in graph.inputs[0].shape[1:]),
        "fp32_ms": round(ms["fp32"], 4), "int8_ms": round(ms["int8"], 4),
        "fp32_lowered_ms": round(ms["fp32_lowered"], 4), "int8_lowered_ms": round(ms["lowered"], 4),
        "int8_speedup": round(ms["fp32"] / ms["int8"], 2),
        "lowered_speedup": round(ms["fp32_lowered"] / ms["lowered"], 2),
        "int8_pieces": last["int8"]["xnnpack_partitions"], "int8_ops_outside": last["int8"]["ops_outside_xnnpack"],
        "lowered_pieces": last["lowered"]["xnnpack_partitions"], "lowered_ops_outside": outside,
        "lowered_op_share": bench.xnnpack_op_share(outside, len(graph.ops)),
        "dot_product_rewrites": _dot_product_rewrites(), "rounds": FLAGS.rounds,
        "conditions": load.conditions(), "machine": bench.machine_name(), "command": command,
    }


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    command = shlex.join([Path(sys.executable).name, *sys.argv])
    done = bench.models_recorded_here(FLAGS.out, dot_product_rewrites=_dot_product_rewrites())
    for name in FLAGS.models or kerasnets.one_per_family():  # the heavy ones too
        if name in done:
            continue
        row = measure(name, command)
        bench.append_rows([row], FLAGS.out, COLUMNS)
        print(f"{name}: fp32 {row['fp32_ms']} ms, int8 {row['int8_ms']} ms ({row['int8_speedup']}x), lowered "
              f"fp32 {row['fp32_lowered_ms']} ms, int8 {row['int8_lowered_ms']} ms ({row['lowered_speedup']}x); "
              f"outside XNNPACK: {row['int8_ops_outside'] or '-'} -> {row['lowered_ops_outside'] or '-'}", flush=True)


if __name__ == "__main__":
    app.run(main)
