"""Benchmark: the training recipe's options, one row each, on the frontier's reference model.

    .venv/bin/python benchmarks/recipe.py                        # every option, 10 epochs
    .venv/bin/python benchmarks/recipe.py --options baseline,fast --epochs 30

Rows: the baseline recipe, the "fast" recipe (bfloat16 where the CPU has it, label smoothing
0.2, an EMA of the weights, a one-cycle linear schedule at a doubled rate), and "fast" with one
of its changes taken back (fp32, no EMA, no label smoothing, cosine at the baseline rate), or
with batch 256 at a doubled rate, or with a fifth of the weight decay (small nets underfit); and
"fast" on a second seed, whose distance from "fast" is the run-to-run spread the rows are read
against. Each row: CIFAR-10 (JPEG) top-1 on the 10,000 test images in fp32, with test-time flip
(reported apart: it doubles on-device cost) and as post-training int8 (LiteRT), and the training
seconds on this machine. Appended to results/recipe.csv as each row finishes; rows already there
(same option, epochs, machine) are skipped.
"""
from __future__ import annotations

import os
import shlex
import sys
import tempfile
from pathlib import Path

from absl import app, flags

from kerasnets.pipelines import data as data_mod, machine
from kerasnets.tools import bench, frontier

REPO = Path(__file__).resolve().parents[1]
ARCHIVE = "/work/shared/data/cifar10-jpeg/cifar10-jpeg.tar.gz"
COLUMNS = ["model", "option", "epochs", "top1_fp32", "top1_fp32_flip_tta", "top1_int8", "seconds",
           "precision", "batch_size", "config", "conditions", "machine", "command"]
BASE = frontier.RECIPES["baseline"]
FAST = {k: v for k, v in frontier.RECIPES["fast"].items() if BASE.get(k) != v}  # what "fast" changes
# option -> recipe overrides on the baseline: "fast", then "fast" without one of its changes
OPTIONS = {
    "baseline": {},
    "fast": FAST,
    "fast_fp32": {**FAST, "mixed_precision": "float32"},
    "fast_no_ema": {**FAST, "ema": 0.0},
    "fast_no_label_smoothing": {**FAST, "label_smoothing": 0.0},
    "fast_cosine": {**FAST, "schedule": "cosine", "warmup_epochs": 0, "lr": 0.05},
    "fast_batch256": {**FAST, "batch_size": 256, "lr": 0.2},
    "fast_weight_decay_1e-4": {**FAST, "weight_decay": 1e-4},
    "fast_seed1": {**FAST, "seed": 1},  # "fast" again on another seed: the run-to-run spread
}
FLAGS = flags.FLAGS
flags.DEFINE_list("options", list(OPTIONS), f"rows to run, of {', '.join(OPTIONS)}")
flags.DEFINE_integer("epochs", 10, "training epochs per row", lower_bound=1)
flags.DEFINE_string("dataset", f"imagefolder:{ARCHIVE}", "image folder or archive with train/ and test/")
flags.DEFINE_string("out", str(REPO / "results" / "recipe.csv"), "CSV to append to")


def main(argv):
    del argv
    unknown = set(FLAGS.options) - set(OPTIONS)
    if unknown:
        raise app.UsageError(f"unknown --options {sorted(unknown)}; known: {', '.join(OPTIONS)}")
    name = machine.machine_name()
    rows = frontier.read_rows(FLAGS.out)
    data = data_mod.in_memory(data_mod.load(FLAGS.dataset, image_shape=(32, 32, 3)))
    reference, = frontier.search_space_reference()
    command = " ".join(["python", "benchmarks/recipe.py", *map(shlex.quote, sys.argv[1:])])
    for option in FLAGS.options:
        if any((r["option"], r["epochs"], r["machine"]) == (option, str(FLAGS.epochs), name) for r in rows):
            print(f"{option}: already in {FLAGS.out}")
            continue
        with tempfile.TemporaryDirectory() as work, bench.LoadMonitor() as load:
            row = frontier.train_row(reference, data, work, recipe="baseline", epochs=FLAGS.epochs,
                                     qat_epochs=0, overrides=OPTIONS[option])
        config = {**BASE, **OPTIONS[option]}
        row.update(option=option, batch_size=config["batch_size"], machine=name, command=command,
                   conditions=load.conditions(),
                   model=frontier.REFERENCE,
                   config=";".join(f"{k}={v}" for k, v in sorted(OPTIONS[option].items())) or "baseline")
        bench.append_rows([row], FLAGS.out, COLUMNS)
        print({k: row.get(k) for k in COLUMNS[:8]}, flush=True)


if __name__ == "__main__":
    app.run(main)
