"""Benchmark: training images/s of `kerasnets run`'s input pipeline + fit (pipelines.data +
pipelines.train.fit) against a plain `model.fit` on `image_dataset_from_directory`, same model,
same images, same batch size; appends rows to results/train-throughput.csv.

    .venv/bin/python benchmarks/train_throughput.py                       # resnet8, shufflenetv2_050_cifar
    .venv/bin/python benchmarks/train_throughput.py --models resnet8 --epochs 2

Throughput counts training steps only (validation excluded) over the epochs after the first:
the first pays for tracing and, in kerasnets' pipeline, for filling the decode cache.
"""
from __future__ import annotations

import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

from absl import app, flags, logging

import kerasnets
import tensorflow as tf
import tf_keras as keras

from kerasnets.pipelines import data as data_mod, train
from kerasnets.tools import bench

REPO = Path(__file__).resolve().parents[1]
ARCHIVE = "/work/shared/data/cifar10-jpeg/cifar10-jpeg.tar.gz"
COLUMNS = ["model", "pipeline", "images_per_s", "epochs_timed", "batch_size", "train_images",
           "ratio_vs_plain", "machine", "command"]
FLAGS = flags.FLAGS
flags.DEFINE_list("models", ["resnet8", "shufflenetv2_050_cifar"], "registry names")
flags.DEFINE_string("dataset", f"imagefolder:{ARCHIVE}", "an image folder or archive with train/ and test/")
flags.DEFINE_integer("epochs", 3, "epochs per pipeline (the first is not timed)", lower_bound=2)
flags.DEFINE_integer("batch_size", 128, "images per step", lower_bound=1)
flags.DEFINE_string("out", str(REPO / "results" / "train-throughput.csv"), "CSV to append to")


class TrainTimer(keras.callbacks.Callback):
    """Seconds and steps spent in training (not validation) per epoch."""

    def __init__(self):
        super().__init__()
        self.epochs = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start, self._steps = time.perf_counter(), 0

    def on_train_batch_end(self, batch, logs=None):
        self._steps += 1

    def on_test_begin(self, logs=None):
        self.epochs.append((time.perf_counter() - self._start, self._steps))

    def images_per_s(self, batch_size):
        timed = self.epochs[1:]
        return sum(steps for _, steps in timed) * batch_size / sum(seconds for seconds, _ in timed)


def kerasnets_pipeline(name, data, work):
    timer = TrainTimer()
    config = {"epochs": FLAGS.epochs, "batch_size": FLAGS.batch_size, "augment": ["crop", "flip"]}
    train.fit(lambda: kerasnets.create_model(name, input_shape=data.image_shape, classes=len(data.classes)),
              data, os.path.join(work, "kerasnets"), config=config, verbose=2, extra_callbacks=[timer])
    return timer.images_per_s(FLAGS.batch_size)


def plain_pipeline(name, root, shape):
    """What a Keras user writes first: image_dataset_from_directory, flip, model.fit."""
    load = dict(image_size=shape[:2], batch_size=FLAGS.batch_size, label_mode="categorical", seed=0)
    train_ds = keras.utils.image_dataset_from_directory(os.path.join(root, "train"), shuffle=True, **load)
    test_ds = keras.utils.image_dataset_from_directory(os.path.join(root, "test"), shuffle=False, **load)
    scale = lambda x, y: (x / 127.5 - 1.0, y)  # noqa: E731
    train_ds = train_ds.map(lambda x, y: (tf.image.random_flip_left_right(x), y)).map(scale)
    model = kerasnets.create_model(name, input_shape=shape, classes=10)
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True),
                  loss="categorical_crossentropy", metrics=["accuracy"])
    timer = TrainTimer()
    model.fit(train_ds, epochs=FLAGS.epochs, validation_data=test_ds.map(scale), verbose=2, callbacks=[timer])
    return timer.images_per_s(FLAGS.batch_size)


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    data = data_mod.load(FLAGS.dataset)
    root = data.source.removeprefix("imagefolder:")
    command = shlex.join([Path(sys.executable).name, *sys.argv])
    for name in FLAGS.models:
        with tempfile.TemporaryDirectory() as work:
            ours = kerasnets_pipeline(name, data, work)
        keras.backend.clear_session()
        plain = plain_pipeline(name, root, data.image_shape)
        keras.backend.clear_session()
        rows = [{"model": name, "pipeline": pipeline, "images_per_s": round(speed, 1),
                 "epochs_timed": FLAGS.epochs - 1, "batch_size": FLAGS.batch_size,
                 "train_images": data.num_train, "ratio_vs_plain": round(speed / plain, 3),
                 "machine": bench.machine_name(), "command": command}
                for pipeline, speed in (("kerasnets", ours), ("plain model.fit", plain))]
        bench.append_rows(rows, FLAGS.out, COLUMNS)
        print(f"{name}: kerasnets {ours:.0f} img/s, plain model.fit {plain:.0f} img/s, ratio {ours / plain:.2f}",
              flush=True)


if __name__ == "__main__":
    app.run(main)
