"""Benchmark: where int8 gains over fp32, block by block (`kerasnets.tools.int8_blocks`): LiteRT +
XNNPACK, 1 thread, fp32 and int8 both lowered as the app model is; appends one row per block to
results/int8-by-block.csv.

    .venv/bin/python benchmarks/int8_blocks.py --models ghostnet_050,resnet8

Weights are untrained, BatchNorm statistics set from digits (latency does not depend on the
values), as in benchmarks/int8_speedup.py, whose whole-model figures the last block's cumulative
ones repeat. Each row names the machine with its int8 instruction-set features and the load it
ran under; a model already in the file for this machine is skipped (delete its rows to re-run).
"""
from __future__ import annotations

import shlex
import sys
from pathlib import Path

from absl import app, flags, logging

import kerasnets
from kerasnets.pipelines import convert, data
from kerasnets.tools import bench, int8_blocks

REPO = Path(__file__).resolve().parents[1]
FLAGS = flags.FLAGS
flags.DEFINE_list("models", ["ghostnet_050", "augshufflenet_050_cifar", "mgic_mobilenet_v3_small",
                             "shufflenetv2_050", "resnet8"],
                  "registry names (default: the models whose int8 gains least, and the reference)")
flags.DEFINE_integer("rounds", 3, "turns over all prefixes of a model", lower_bound=1)
flags.DEFINE_integer("runs", 40, "timed invokes per figure", lower_bound=1)
flags.DEFINE_string("out", str(REPO / "results" / "int8-by-block.csv"), "CSV file rows are appended to")
CALIBRATION_IMAGES = 16


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    command = shlex.join([Path(sys.executable).name, *sys.argv])
    done = bench.models_recorded_here(FLAGS.out)
    for name in FLAGS.models:
        if name in done:
            continue
        model = kerasnets.create_model(name)
        images, _ = data.digits_images(model.input_shape[1:], CALIBRATION_IMAGES)
        convert.calibrate_batchnorm(model, images)
        rows = int8_blocks.int8_gain_by_block(model, images, name=name, rounds=FLAGS.rounds, runs=FLAGS.runs,
                                              command=command)
        bench.append_rows(rows, FLAGS.out, int8_blocks.COLUMNS)
        slowest = sorted(rows, key=lambda r: -r["int8_ms"])[:3]
        print(f"{name}: fp32 {rows[-1]['model_fp32_ms']} ms, int8 {rows[-1]['model_int8_ms']} ms; most int8 time in "
              + ", ".join(f"{r['ends_at']} ({r['int8_share']:.0%}, {r['speedup']}x)" for r in slowest), flush=True)


if __name__ == "__main__":
    app.run(main)
