"""Ship trained frontier rows: their weights into the package and TFLite Micro bundles.

    .venv/bin/python benchmarks/ship_weights.py \
        --ship 'resnet8=resnet8[res=32]' --ship 'resnet14_062_cifar=resnet_cifar[depth=14,width=0.625]'

Each `NAME=LABEL` takes the row of candidate LABEL at --epochs from results/frontier.csv and its
folder under --work (as `kerasnets frontier` left it), saves the fp32 weights as registered model
NAME in kerasnets/pretrained/ (WEIGHTS.json records the hash, the check outputs and the row's
accuracy) and writes results/bundles/NAME-cifar10/ from the deployed int8 model.
"""
from __future__ import annotations

import os

from absl import app, flags

from kerasnets.pipelines import data as data_mod
from kerasnets.tools import frontier

ARCHIVE = "/work/shared/data/cifar10-jpeg/cifar10-jpeg.tar.gz"
FLAGS = flags.FLAGS
flags.DEFINE_multi_string("ship", [], "NAME=LABEL: registered name = frontier candidate label")
flags.DEFINE_integer("epochs", 30, "the rows' training epochs")
flags.DEFINE_string("dataset", f"imagefolder:{ARCHIVE}", "the data set the rows were trained on")
flags.DEFINE_string("out", "results/frontier.csv", "the frontier table")
flags.DEFINE_string("work", "runs/frontier", "the frontier's work folder")


def main(argv):
    del argv
    data = data_mod.load(FLAGS.dataset, image_shape=(32, 32, 3))
    rows = frontier.read_rows(FLAGS.out)
    for pair in FLAGS.ship:
        name, _, label = pair.partition("=")
        candidate = frontier.find(frontier.search_space_reference() + frontier.search_space(), label)
        row = next((r for r in rows if (r["model"], r["variant"], r["epochs"]) ==
                    (candidate.family, candidate.variant, str(FLAGS.epochs))), None)
        if row is None:
            raise app.UsageError(f"no {FLAGS.epochs}-epoch row of {label} in {FLAGS.out}")
        row = {k: (float(v) if k.startswith("top1") else v) for k, v in row.items()}
        report = frontier.ship(row, os.path.join(FLAGS.work, frontier.row_folder(candidate, FLAGS.epochs)),
                               name, data)
        print(name, "arena", report["arena_bytes"], "ops", report["ops"], flush=True)


if __name__ == "__main__":
    app.run(main)
