"""Compression benchmark: every pruning criterion at two ratios on one trained model -> results/compression.csv.

One base model is trained; each (method, ratio) row compresses a copy with `kerasnets.pipelines.prune.compress`,
fine-tunes it for the same number of epochs as every other row, and records params, MACs, the
int8 .tflite size, host int8 latency (LiteRT, 1 thread, median) and top-1 of the float and the
int8 model. A `qat` row does the same for the unpruned model after the same number of epochs of
8-bit quantisation-aware training (its int8 top-1 against the base row's fp32 top-1 is the QAT gap;
the base row's own int8 column is post-training quantisation). SCL rows (method `scl`, trained
with its masks for the same epochs) carry the regulariser strength in the ratio column. Rows are
appended as they finish, so an interrupted run keeps what it measured and a re-run skips rows
already in the file. Every row keeps its int8 model (`WORK/MODEL/ROW/int8.tflite`), so `--retime`
can time all rows of a model again later, alone and interleaved over several rounds, and rewrite
their latency column: training runs for hours, and a latency taken while anything else shares the
CPU is not worth keeping.

    python benchmarks/compression.py --dataset imagefolder:../shared/data/cifar10-jpeg/cifar10-jpeg.tar.gz \\
        --model resnet20_cifar --base_epochs 10 --finetune_epochs 2 --train_images 20000
    python benchmarks/compression.py --model resnet20_cifar --retime
"""
from __future__ import annotations

import csv
import os
import pathlib
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("dataset", "digits", "Data set spec as the pipeline takes it.")
flags.DEFINE_string("model", "resnet20_cifar", "Registered model.")
flags.DEFINE_integer("input_size", 32, "Square input size.")
flags.DEFINE_integer("base_epochs", 10, "Epochs of the unpruned model.")
flags.DEFINE_integer("finetune_epochs", 2, "Epochs after every compression (the same for every row).")
flags.DEFINE_integer("train_images", 0, "Use only this many training images (0: all).")
flags.DEFINE_integer("test_images", 2000, "Test images for top-1.")
flags.DEFINE_integer("batch_size", 128, "Training batch size.")
flags.DEFINE_float("lr", 0.05, "Peak learning rate (SGD, cosine).")
flags.DEFINE_list("methods", ["l1", "bn", "qsfm", "slimming", "complexity_pa", "complexity_fa",
                              "complexity_ma"], "Methods to run.")
flags.DEFINE_bool("qat", True, "Also record the unpruned model after --finetune_epochs of QAT (method 'qat').")
flags.DEFINE_float("qat_lr", 1e-3, "QAT learning rate.")
flags.DEFINE_list("ratios", ["0.3", "0.5"], "Pruning ratios.")
flags.DEFINE_list("scl_strengths", ["0.5", "2.0"], "Connection-count strengths of the scl rows (their "
                  "ratio column holds the strength: SCL learns how many channels to remove).")
flags.DEFINE_string("out", "results/compression.csv", "CSV file (rows are appended).")
flags.DEFINE_string("work", "runs/compression", "Folder for checkpoints (one sub-folder per model).")
flags.DEFINE_bool("retime", False, "Only re-time the int8 latency of --model's rows from their saved "
                  "int8.tflite and rewrite that column of --out.")
flags.DEFINE_integer("retime_rounds", 5, "Rounds of --retime; each times every row once (fresh process, "
                     "50 runs); a row's latency is the median of its rounds.")

COLUMNS = ["model", "dataset", "method", "ratio", "params", "macs", "int8_kb", "latency_ms", "top1_fp32",
           "top1_int8", "base_params", "base_macs", "base_top1_fp32", "epochs", "device", "command"]


def _row_dir(method, ratio):
    """Checkpoints and int8 model of one row: WORK/MODEL/{base, qat, METHOD-RATIO}."""
    name = {"none": "base", "qat": "qat"}.get(method) or f"{method}-{float(ratio)}"
    return os.path.join(FLAGS.work, FLAGS.model, name)


def _int8_latency_ms(tflite) -> float:
    """A row's latency: median of 50 runs in a fresh process, LiteRT 1 thread, XNNPACK (the same for
    the first measurement and --retime)."""
    from kerasnets.tools import bench

    return bench.measure_in_child(tflite, threads=1, runs=50, xnnpack=True)["median"]


def _measure(model, data, images, row_dir, stats=None):
    """Row figures of a float or QAT model, its int8 model kept in `row_dir`; `stats` (params,
    MACs) for a QAT model, whose fake-quant wrappers the profiler does not count."""
    import kerasnets
    from kerasnets.pipelines import convert, train

    tflite = convert.export(model, "int8", images)
    os.makedirs(row_dir, exist_ok=True)
    with open(os.path.join(row_dir, "int8.tflite"), "wb") as f:
        f.write(tflite)
    stats = stats or kerasnets.profile(model)
    latency = _int8_latency_ms(tflite)
    return {"params": stats["params"], "macs": stats["macs"], "int8_kb": round(len(tflite) / 1024, 1),
            "latency_ms": round(latency, 4), "top1_fp32": round(train.evaluate(model, data), 4),
            "top1_int8": round(convert.tflite_top1(tflite, data), 4)}


def _done(path):
    if not os.path.exists(path):
        return set()
    with open(path, newline="") as f:
        return {(r["model"], r["method"], r["ratio"], r["epochs"]) for r in csv.DictReader(f)}


def _base_model(data, config):
    import tf_keras as keras

    import kerasnets
    from kerasnets.pipelines import train

    path = os.path.join(_row_dir("none", 0), "last.keras")
    if os.path.exists(path):
        return keras.models.load_model(path, compile=False)
    shape = (FLAGS.input_size, FLAGS.input_size, data.image_shape[-1])
    run = train.fit(lambda: kerasnets.create_model(FLAGS.model, input_shape=shape, classes=len(data.classes)),
                    data, os.path.dirname(path), config={**config, "epochs": FLAGS.base_epochs}, verbose=2)
    return run["model"]


def _qat_model(base, data, config, calibration):
    """The unpruned model after FLAGS.finetune_epochs of 8-bit QAT at a small learning rate, its
    ranges started from the `calibration` images."""
    from kerasnets.pipelines import quantize, train

    qat_config = {**config, "epochs": FLAGS.finetune_epochs, "lr": FLAGS.qat_lr, "warmup_epochs": 0}
    return train.fit(lambda: quantize.quantize_model(base, calibration=calibration), data, _row_dir("qat", 0),
                     config=qat_config, verbose=2)["model"]


def _retime():
    """Re-time every row of FLAGS.model that has its int8 model, interleaving rows over rounds so
    that a slow spell of the machine spreads over all of them, and rewrite the latency column."""
    import numpy as np

    if not os.path.exists(FLAGS.out):
        raise SystemExit(f"--retime: no {FLAGS.out}; run the benchmark first")
    with open(FLAGS.out, newline="") as f:
        rows = list(csv.DictReader(f))
    files = {i: os.path.join(_row_dir(r["method"], r["ratio"]), "int8.tflite")
             for i, r in enumerate(rows) if r["model"] == FLAGS.model}
    files = {i: path for i, path in files.items() if os.path.exists(path)}
    if not files:
        raise SystemExit(f"no int8.tflite for {FLAGS.model} under {FLAGS.work}/{FLAGS.model}: "
                         "run the benchmark for this model first")
    models = {i: pathlib.Path(path).read_bytes() for i, path in files.items()}
    medians = {i: [] for i in files}
    for round_ in range(FLAGS.retime_rounds):
        for i, tflite in models.items():
            medians[i].append(_int8_latency_ms(tflite))
        print(f"round {round_ + 1}/{FLAGS.retime_rounds} done", flush=True)
    for i, values in medians.items():
        rows[i]["latency_ms"] = round(float(np.median(values)), 4)
        print(rows[i]["method"], rows[i]["ratio"], [round(v, 3) for v in values], flush=True)
    with open(FLAGS.out, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def main(argv):
    del argv
    if FLAGS.retime:
        return _retime()
    from kerasnets.pipelines import data as data_mod, prune
    from kerasnets.tools import bench

    data = data_mod.subset(data_mod.load(FLAGS.dataset, image_shape=(FLAGS.input_size, FLAGS.input_size, None)),
                           FLAGS.train_images, FLAGS.test_images, shuffle_seed=0, cache=True)
    images = data_mod.representative_images(data, 100)
    config = {"batch_size": FLAGS.batch_size, "lr": FLAGS.lr, "optimizer": "sgd"}
    base = _base_model(data, config)
    base_stats = _measure(base, data, images, _row_dir("none", 0))
    command = " ".join([os.path.basename(sys.executable), *sys.argv])
    common = {"model": FLAGS.model, "dataset": FLAGS.dataset, "base_params": base_stats["params"], "base_macs": base_stats["macs"],
              "base_top1_fp32": base_stats["top1_fp32"], "epochs": FLAGS.finetune_epochs,
              "device": bench.machine_name(), "command": command}
    done = _done(FLAGS.out)
    if (FLAGS.model, "none", "0.0", str(FLAGS.base_epochs)) not in done:
        base_row = {**common, **base_stats, "method": "none", "ratio": 0.0, "epochs": FLAGS.base_epochs}
        bench.append_rows([base_row], FLAGS.out, COLUMNS)
    if FLAGS.qat and (FLAGS.model, "qat", "0.0", str(FLAGS.finetune_epochs)) not in done:
        qat = _qat_model(base, data, config, images)
        qat_stats = _measure(qat, data, images, _row_dir("qat", 0), base_stats)
        bench.append_rows([{**common, **qat_stats, "method": "qat", "ratio": 0.0}], FLAGS.out, COLUMNS)
    for method in FLAGS.methods:
        # SCL learns how much to remove: it is swept over its regulariser strength instead;
        # 2:4 sparsity is 50% by construction
        settings = {"scl": FLAGS.scl_strengths, "m_by_n": ["0.5"]}.get(method, FLAGS.ratios)
        for setting in settings:
            if (FLAGS.model, method, str(float(setting)), str(FLAGS.finetune_epochs)) in done:
                continue
            amount = {"strength": float(setting)} if method == "scl" else {"ratio": float(setting)}
            pruned, _ = prune.compress(base, method, **amount, data=data, epochs=FLAGS.finetune_epochs,
                                       config=config, out_dir=_row_dir(method, setting))
            row = {**common, **_measure(pruned, data, images, _row_dir(method, setting)), "method": method,
                   "ratio": float(setting)}
            bench.append_rows([row], FLAGS.out, COLUMNS)
            print(row, flush=True)


if __name__ == "__main__":
    app.run(main)
