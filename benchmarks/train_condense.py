"""Benchmark: train CondenseNet / EffCNet briefly on CIFAR-10 (JPEG), condense, and record how the
training-time and condensed models agree and score (appends rows to results/condense.csv).

    .venv/bin/python benchmarks/train_condense.py --epochs 30
    .venv/bin/python benchmarks/train_condense.py --epochs 1 --steps-per-epoch 20 --test-images 512  # smoke

The recipe is the official CondenseNet one scaled to the epoch budget: SGD with Nesterov momentum
0.9, learning rate 0.1 on a per-step cosine decay, weight decay 1e-4, batch 64, condensing stages
over the first half of training. Images are scaled to [-1, 1]; training images are flipped at
random and, with --augment self-querying (the default), pass CondenseNeXtV2's self-querying
augmentation first.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

import kerasnets  # noqa: F401  (selects tf-keras before TensorFlow loads)
import tensorflow as tf
import tf_keras as keras

from kerasnets import condensenet as cn
from kerasnets.pipelines import augment, convert
from kerasnets.tools.bench import append_rows, machine_name

REPO = Path(__file__).resolve().parents[1]
ARCHIVE = Path("/work/shared/data/cifar10-jpeg/cifar10-jpeg.tar.gz")
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
COLUMNS = ["model", "epochs", "train_images", "top1_train_model", "top1_condensed", "top1_condensed_int8",
           "max_abs_diff", "params", "macs", "int8_kb", "seconds", "machine", "command"]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1, help="training epochs (the schedule spans them)")
    parser.add_argument("--models", nargs="+", default=["condensenet50_cifar", "effcnet_cifar"])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--group-lasso", type=float, default=0.0, help="official: 0 on CIFAR")
    parser.add_argument("--augment", choices=["self-querying", "flip"], default="self-querying")
    parser.add_argument("--steps-per-epoch", type=int, default=None, help="cut epochs short (smoke runs)")
    parser.add_argument("--test-images", type=int, default=None, help="evaluate on the first N test images")
    parser.add_argument("--archive", type=Path, default=ARCHIVE)
    parser.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "kerasnets-data")
    parser.add_argument("--results", type=Path, default=REPO / "results" / "condense.csv")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error(f"--epochs must be >= 1, got {args.epochs}")
    return args


# --- data ----------------------------------------------------------------------------------------

def unpack(archive: Path, cache_dir: Path) -> Path:
    """Unpack the archive once into cache_dir/<archive stem> (never beside the archive)."""
    target = cache_dir / archive.name.removesuffix(".tar.gz")
    if (target / "test").is_dir() and (target / "train").is_dir():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(dir=cache_dir, prefix=".unpacking-"))
    with tarfile.open(archive) as tar:
        tar.extractall(partial, filter="data")
    os.replace(partial, target)  # a half-unpacked folder never looks finished
    return target


def _scale(images):
    return images / 127.5 - 1.0


def _augment_batch(images, labels, kind):
    if kind == "self-querying":
        images = augment.self_querying_augment(images)
    return tf.image.random_flip_left_right(images), labels


def datasets(root: Path, args):
    load = dict(image_size=(32, 32), class_names=CLASSES, label_mode="int", seed=args.seed)
    train = keras.utils.image_dataset_from_directory(root / "train", batch_size=args.batch_size,
                                                     shuffle=True, **load)
    train = train.map(lambda x, y: _augment_batch(x, y, args.augment), num_parallel_calls=tf.data.AUTOTUNE)
    train = train.map(lambda x, y: (_scale(x), y)).prefetch(tf.data.AUTOTUNE)
    # shuffled (with the seed) so that a --test-images subset covers every class
    test = keras.utils.image_dataset_from_directory(root / "test", batch_size=256, shuffle=True, **load)
    if args.test_images:
        test = test.unbatch().take(args.test_images).batch(256)
    test = test.map(lambda x, y: (_scale(x), y)).cache()
    return train.repeat() if args.steps_per_epoch else train, test


# --- training and comparison ---------------------------------------------------------------------

def _steps_per_epoch(train, args) -> int:
    return args.steps_per_epoch or int(train.cardinality())


def train_model(name, train, args):
    model = kerasnets.create_model(name, condensing=True, classifier_activation="linear",
                                   group_lasso=args.group_lasso)
    steps = _steps_per_epoch(train, args)
    schedule = keras.optimizers.schedules.CosineDecay(args.lr, decay_steps=args.epochs * steps)
    model.compile(optimizer=keras.optimizers.SGD(schedule, momentum=0.9, nesterov=True,
                                                 weight_decay=args.weight_decay),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    model.fit(train, epochs=args.epochs, steps_per_epoch=args.steps_per_epoch, verbose=2,
              callbacks=[cn.CondensationSchedule(args.epochs, steps)])
    cn.finish_condensation(model)  # only acts on runs cut short of half the schedule
    return model


def compare(training_model, condensed, test):
    """Top-1 of both models and the largest logit difference over the test images."""
    correct_train = correct_condensed = count = 0
    max_diff = 0.0
    for images, labels in test:
        a = training_model(images, training=False).numpy()
        b = condensed(images, training=False).numpy()
        max_diff = max(max_diff, float(np.abs(a - b).max()))
        correct_train += int((a.argmax(-1) == labels.numpy()).sum())
        correct_condensed += int((b.argmax(-1) == labels.numpy()).sum())
        count += len(labels)
    return correct_train / count, correct_condensed / count, max_diff


def run(args) -> list[dict]:
    keras.utils.set_random_seed(args.seed)
    train, test = datasets(unpack(args.archive, args.cache_dir), args)
    command = shlex.join([Path(sys.executable).name, *sys.argv])
    rows = []
    for name in args.models:
        start = time.time()
        model = train_model(name, train, args)
        condensed = cn.condense(model)
        top1_train, top1_condensed, max_diff = compare(model, condensed, test)
        stats = kerasnets.profile(condensed)
        tflite = convert.to_int8(condensed, np.concatenate([x.numpy() for x, _ in train.take(3)]))
        int8_top1 = convert.tflite_accuracy(tflite, test.unbatch().as_numpy_iterator())
        row = {"model": name, "epochs": args.epochs,
               "train_images": _steps_per_epoch(train, args) * args.batch_size * args.epochs,
               "top1_train_model": f"{top1_train:.4f}", "top1_condensed": f"{top1_condensed:.4f}",
               "top1_condensed_int8": f"{int8_top1:.4f}", "max_abs_diff": f"{max_diff:.3g}",
               "params": stats["params"], "macs": stats["macs"], "int8_kb": round(len(tflite) / 1024, 1),
               "seconds": round(time.time() - start), "machine": machine_name(), "command": command}
        append_rows([row], str(args.results), COLUMNS)
        print(f"{name}: top-1 {top1_train:.4f} (training-time) / {top1_condensed:.4f} (condensed), "
              f"max |logit diff| {max_diff:.3g}, {time.time() - start:.0f} s", flush=True)
        rows.append(row)
    return rows


if __name__ == "__main__":
    run(parse_args())
