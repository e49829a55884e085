"""Benchmark: int8 file size and TFLite Micro arena of every condensed model (CondenseNet, EffCNet,
CondenseNeXt) with its learned group convs folded (the registered form) and with the Index as a
GATHER (`kerasnets.condensenet.index_as_gather`); writes results/condensed-index.csv.

    .venv/bin/python benchmarks/condensed_index.py

Weights are the registered structure's, BatchNorm-calibrated on digits as `kerasnets zoo` does
(sizes and arenas do not depend on trained values). The arena is the TFLite Micro interpreter's
recording allocator in a child process, as in the zoo table.
"""
from __future__ import annotations

import importlib.metadata
from pathlib import Path

from absl import app, flags

import kerasnets
from kerasnets import condensenet
from kerasnets.micro import arena
from kerasnets.pipelines import convert, data, machine, tflite_file
from kerasnets.tools import zoo

REPO = Path(__file__).resolve().parents[1]
COLUMNS = ["model", "input", "index", "int8_kib", "arena_bytes", "gather_ops", "tflite_micro", "machine"]
FLAGS = flags.FLAGS
flags.DEFINE_list("models", None, "models to measure (default: every registered model with a condensed layer)")
flags.DEFINE_string("out", str(REPO / "results" / "condensed-index.csv"), "CSV to write")


def _row(name, model, index, images, tflm, host):
    tflite = convert.to_int8(model, images)
    ops = [op.name for op in tflite_file.read_tflite(tflite, source=name).ops]
    return {"model": name, "input": "x".join(map(str, model.input_shape[1:])), "index": index,
            "int8_kib": round(len(tflite) / 1024, 1), "arena_bytes": arena.measure_arena_in_child(tflite),
            "gather_ops": ops.count("GATHER"), "tflite_micro": tflm, "machine": host}


def main(argv):
    del argv
    tflm, host, rows = importlib.metadata.version("tflite-micro"), machine.machine_name(), []
    for name in FLAGS.models or kerasnets.list_models():
        model = kerasnets.create_model(name)
        if not condensenet.indexed_layers(model):
            continue
        images, _ = data.digits_images(model.input_shape[1:], zoo.CALIBRATION_IMAGES)
        convert.calibrate_batchnorm(model, images)
        for index, form in (("folded", model), ("gather", condensenet.index_as_gather(model))):
            rows.append(_row(name, form, index, images, tflm, host))
            print(rows[-1], flush=True)
    zoo.write_csv(rows, FLAGS.out, COLUMNS)


if __name__ == "__main__":
    app.run(main)
