"""Benchmark: training images/s of `kerasnets run`'s input pipeline + fit (pipelines.data +
pipelines.train.fit, float32) against the two baselines a Keras user writes first: `model.fit` on
the decoded training set as in-memory arrays, and `model.fit` on `image_dataset_from_directory`;
same model, images, optimiser and batch size, the three interleaved over `--rounds` (median
kept); appends rows to results/train-throughput.csv.

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

import numpy as np
from absl import app, flags, logging

import kerasnets
import tensorflow as tf
import tf_keras as keras

from kerasnets.pipelines import data as data_mod, train
from kerasnets.tools import bench

REPO = Path(__file__).resolve().parents[1]
ARCHIVE = "/work/shared/data/cifar10-jpeg/cifar10-jpeg.tar.gz"
COLUMNS = ["model", "pipeline", "images_per_s", "epochs_timed", "batch_size", "train_images",
           "ratio_vs_plain", "ratio_vs_in_memory", "rounds", "conditions", "machine", "command"]
FLAGS = flags.FLAGS
flags.DEFINE_list("models", ["resnet8", "shufflenetv2_050_cifar"], "registry names")
flags.DEFINE_string("dataset", f"imagefolder:{ARCHIVE}", "an image folder or archive with train/ and test/")
flags.DEFINE_integer("epochs", 3, "epochs per pipeline (the first is not timed)", lower_bound=2)
flags.DEFINE_integer("batch_size", 128, "images per step", lower_bound=1)
flags.DEFINE_string("out", str(REPO / "results" / "train-throughput.csv"), "CSV to append to")
flags.DEFINE_integer("rounds", 2, "interleaved rounds of the pipelines (the median is kept)", lower_bound=1)
flags.DEFINE_list("pipelines", ["kerasnets", "in-memory", "plain"],
                  "pipelines to time: kerasnets, in-memory (arrays + model.fit), plain (image_dataset_from_directory)")


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
    # float32 like the other two: this compares input pipelines, not arithmetic
    config = {"epochs": FLAGS.epochs, "batch_size": FLAGS.batch_size, "augment": ["crop", "flip"],
              "mixed_precision": "float32"}
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


def in_memory_pipeline(name, arrays):
    """The baseline a Keras user writes first: the decoded training set as arrays, model.fit on
    them (shuffled, no augmentation), same model, optimiser and batch size."""
    (x, y), (x_test, y_test) = arrays
    model = kerasnets.create_model(name, input_shape=x.shape[1:], classes=10)
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True),
                  loss="categorical_crossentropy", metrics=["accuracy"])
    timer = TrainTimer()
    model.fit(x, keras.utils.to_categorical(y, 10), batch_size=FLAGS.batch_size, epochs=FLAGS.epochs,
              shuffle=True, validation_data=(x_test, keras.utils.to_categorical(y_test, 10)), verbose=2,
              callbacks=[timer])
    return timer.images_per_s(FLAGS.batch_size)


def _arrays(data):
    def split(ds):
        x, y = zip(*ds.batch(1024).as_numpy_iterator())
        return np.concatenate(x), np.concatenate(y)

    return split(data.train), split(data.test)


def _timed_kerasnets(name, data, arrays):
    with tempfile.TemporaryDirectory() as work:
        return kerasnets_pipeline(name, data, work)


# --pipelines key -> (row label, runner(name, data, arrays))
PIPELINES = {
    "kerasnets": ("kerasnets", _timed_kerasnets),
    "in-memory": ("in-memory model.fit", lambda name, data, arrays: in_memory_pipeline(name, arrays)),
    "plain": ("plain model.fit",
              lambda name, data, arrays: plain_pipeline(name, data.source.removeprefix("imagefolder:"),
                                                        data.image_shape)),
}


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    unknown = set(FLAGS.pipelines) - set(PIPELINES)
    if unknown:
        raise app.UsageError(f"unknown --pipelines {sorted(unknown)}; known: {', '.join(PIPELINES)}")
    data = data_mod.load(FLAGS.dataset)
    arrays = _arrays(data) if "in-memory" in FLAGS.pipelines else None
    command = shlex.join([Path(sys.executable).name, *sys.argv])
    for name in FLAGS.models:
        speeds = {PIPELINES[key][0]: [] for key in FLAGS.pipelines}
        with bench.LoadMonitor() as load:
            for _ in range(FLAGS.rounds):  # interleaved, so a change in load hits every pipeline
                for key in FLAGS.pipelines:
                    label, run = PIPELINES[key]
                    speeds[label].append(run(name, data, arrays))
                    keras.backend.clear_session()
        median = {pipeline: float(np.median(values)) for pipeline, values in speeds.items()}
        ratio = lambda speed, label: round(speed / median[label], 3) if label in median else ""  # noqa: E731
        rows = [{"model": name, "pipeline": pipeline, "images_per_s": round(speed, 1),
                 "epochs_timed": FLAGS.epochs - 1, "batch_size": FLAGS.batch_size,
                 "train_images": data.num_train, "ratio_vs_plain": ratio(speed, "plain model.fit"),
                 "ratio_vs_in_memory": ratio(speed, "in-memory model.fit"), "rounds": FLAGS.rounds,
                 "conditions": load.conditions(),
                 "machine": bench.machine_name(), "command": command}
                for pipeline, speed in median.items()]
        bench.append_rows(rows, FLAGS.out, COLUMNS)
        print(f"{name}: " + ", ".join(f"{p} {v:.0f} img/s" for p, v in median.items()), flush=True)


if __name__ == "__main__":
    app.run(main)
