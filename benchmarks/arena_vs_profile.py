"""Benchmark: the profiler's peak-activation estimate against the tensor arena TFLite Micro really
allocates, for every model in results/zoo.csv; writes results/arena-vs-profile.csv.

    .venv/bin/python benchmarks/arena_vs_profile.py          # after `kerasnets zoo`

The arena column comes from `kerasnets zoo` (the TFLite Micro interpreter's recording allocator
once the tensors are allocated); the estimate is `kerasnets.profile(model)["peak_activation_bytes"]` (int8
tensor lifetimes in Keras execution order) at the same input. The arena also holds TFLite
Micro's per-tensor and per-op bookkeeping and the kernels' scratch buffers, so a ratio above 1
is expected; far above 1 means the converter's memory planner or op fusion keeps more alive
than the Keras graph suggests.
"""
from __future__ import annotations

import importlib.metadata
from pathlib import Path

from absl import app, flags

import kerasnets
from kerasnets.tools import zoo

REPO = Path(__file__).resolve().parents[1]
# The figures depend on the model and TFLite Micro's allocator, not on the machine: rows name the
# tflite-micro package (run right after `kerasnets zoo`, whose arena column they compare), and the
# machine of the zoo row the arena comes from, as every results table does.
COLUMNS = ["model", "input", "peak_activation_bytes", "arena_bytes", "arena_over_estimate", "tflite_micro",
           "machine"]
FLAGS = flags.FLAGS
flags.DEFINE_string("zoo_csv", str(REPO / "results" / "zoo.csv"), "table written by kerasnets zoo")
flags.DEFINE_string("out", str(REPO / "results" / "arena-vs-profile.csv"), "CSV to write")


def main(argv):
    del argv
    rows = []
    tflm = importlib.metadata.version("tflite-micro")
    for row in zoo.read_csv(FLAGS.zoo_csv):
        if not row["arena_bytes"]:
            continue
        shape = tuple(int(d) for d in row["input"].split("x"))
        estimate = kerasnets.profile(kerasnets.create_model(row["model"], input_shape=shape))["peak_activation_bytes"]
        arena = int(row["arena_bytes"])
        rows.append({"model": row["model"], "input": row["input"], "peak_activation_bytes": estimate,
                     "arena_bytes": arena, "arena_over_estimate": round(arena / estimate, 3),
                     "tflite_micro": tflm, "machine": row["machine"]})
        print(f"{row['model']}: estimate {estimate}, arena {arena}, ratio {arena / estimate:.2f}", flush=True)
    zoo.write_csv(rows, FLAGS.out, COLUMNS)


if __name__ == "__main__":
    app.run(main)
