"""QAT to int8 for one variant of every family after the same short training -> results/qat.csv.

Each row trains one model (the family's cheapest variant at 32x32) for --epochs on the first
--train_images training images, then records on the first --test_images test images:
- top1_fp32: the float model;
- top1_ptq_int8: the float model converted with post-training quantisation (full-integer int8);
- top1_qat_fakequant: the same model after --qat_epochs of 8-bit QAT (`quantize.quantize_model`,
  ranges started from calibration images), evaluated in Keras with its fake-quant ops;
- top1_qat_int8: that QAT model converted to int8, i.e. what a user who trains with QAT deploys;
- qat_int8_agreement: the share of test images on which the converted QAT model picks the same
  class as the fake-quant QAT model (the conversion's own fidelity, independent of accuracy).
Every model gets the same budget, so the columns compare families only as far as a short run can:
the figures of interest are the gaps within a row (fp32 -> PTQ int8, fake-quant -> QAT int8).
Rows are appended as they finish and a re-run skips the models already in the file; a model whose
run was stopped continues from its last finished epoch (checkpoints in --work/<model>).

    python benchmarks/qat.py --dataset imagefolder:../shared/data/cifar10-jpeg/cifar10-jpeg.tar.gz
"""
from __future__ import annotations

import csv
import os
import subprocess
import sys
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("dataset", "digits", "Data set spec as the pipeline takes it.")
flags.DEFINE_list("models", [], "Registered models (default: the cheapest variant of every family at 32x32).")
flags.DEFINE_integer("epochs", 3, "Float training epochs of every model.")
flags.DEFINE_integer("qat_epochs", 1, "QAT epochs after the float training.")
flags.DEFINE_integer("train_images", 10000, "Training images (the first ones after a fixed shuffle).")
flags.DEFINE_integer("test_images", 2000, "Test images for every top-1 column.")
flags.DEFINE_integer("batch_size", 64, "Training batch size.")
flags.DEFINE_float("lr", 0.05, "Peak learning rate of the float training (SGD, cosine).")
flags.DEFINE_float("qat_lr", 0.005, "Learning rate of the QAT epochs.")
flags.DEFINE_string("out", "results/qat.csv", "CSV file (rows are appended).")
flags.DEFINE_string("work", "runs/qat", "Folder for checkpoints (one sub-folder per model).")

COLUMNS = ["model", "family", "params", "top1_fp32", "top1_ptq_int8", "top1_qat_fakequant", "top1_qat_int8",
           "qat_int8_agreement", "qat_int8_kb", "epochs", "qat_epochs", "train_images", "test_images", "dataset",
           "seconds", "conditions", "device", "command"]
SIZE = 32
CALIBRATION_IMAGES = 128


def cheapest_per_family(size: int = SIZE) -> list[str]:
    """One registered variant of each family (paper) that accepts a `size`x`size` input, cheapest
    first: the one with the fewest MACs among its variants made for that input (the CIFAR ones),
    else the one with the fewest MACs at that input (an ImageNet variant's stride-4 stem makes
    that a poor guide at 32x32, hence the preference)."""
    import kerasnets

    best = {}
    for name in kerasnets.list_models():
        info = kerasnets.model_info(name)
        if info.min_size > size:
            continue
        macs = info.macs * size * size / (info.input_shape[0] * info.input_shape[1])  # scaled to the input
        cost = (info.input_shape[0] != size, macs)
        if info.paper not in best or cost < best[info.paper][0]:
            best[info.paper] = (cost, name)
    # cheapest first, so that rows land sooner
    return [name for _, name in sorted(best.values(), key=lambda entry: entry[0][1])]


def _done(path):
    if not os.path.exists(path):
        return set()
    with open(path, newline="") as f:
        return {r["model"] for r in csv.DictReader(f)}


def qat_row(name: str, data, work: str) -> dict:
    """Train `name` briefly, then measure fp32, PTQ int8, fake-quant QAT and converted QAT int8."""
    import numpy as np

    import kerasnets
    from kerasnets.pipelines import convert, data as data_mod, quantize, train

    start = time.time()
    config = {"batch_size": FLAGS.batch_size, "lr": FLAGS.lr, "optimizer": "sgd", "epochs": FLAGS.epochs}
    shape = (SIZE, SIZE, data.image_shape[-1])
    model = train.fit(lambda: kerasnets.create_model(name, input_shape=shape, classes=len(data.classes)),
                      data, os.path.join(work, name, "float"), config=config, resume=True, verbose=2)["model"]
    calibration = data_mod.representative_images(data, CALIBRATION_IMAGES)
    ptq = convert.export(model, "int8", calibration)
    qat_config = {**config, "epochs": FLAGS.qat_epochs, "lr": FLAGS.qat_lr, "warmup_epochs": 0}
    qat = train.fit(lambda: quantize.quantize_model(model, calibration=calibration), data,
                    os.path.join(work, name, "qat"), config=qat_config, resume=True, verbose=2)["model"]
    qat_int8 = convert.export(qat, "int8", calibration)
    labels, int8_pred = convert.tflite_test_predictions(qat_int8, data, limit=FLAGS.test_images)
    fakequant_pred = np.concatenate([qat.predict(x, verbose=0).argmax(-1) for x, _ in data.test.batch(256)])
    return {"model": name, "family": kerasnets.model_info(name).paper, "params": model.count_params(),
            "top1_fp32": round(train.evaluate(model, data), 4),
            "top1_ptq_int8": round(convert.tflite_top1(ptq, data, limit=FLAGS.test_images), 4),
            "top1_qat_fakequant": round(float(np.mean(fakequant_pred == labels)), 4),
            "top1_qat_int8": round(float(np.mean(int8_pred == labels)), 4),
            "qat_int8_agreement": round(float(np.mean(int8_pred == fakequant_pred)), 4),
            "qat_int8_kb": round(len(qat_int8) / 1024, 1), "seconds": round(time.time() - start)}


def main(argv):
    del argv
    from kerasnets.pipelines import data as data_mod
    from kerasnets.tools import bench

    done = _done(FLAGS.out)
    names = FLAGS.models or cheapest_per_family()
    for name in (n for n in names if n in done):
        print(f"{name}: already in {FLAGS.out}", flush=True)
    todo = [n for n in names if n not in done]
    if len(names) > 1:  # one process per model: a model never inherits another's TensorFlow state
        argv = [a for a in sys.argv[1:] if not a.startswith("--models")]
        for name in todo:
            if subprocess.run([sys.executable, __file__, f"--models={name}", *argv]).returncode:
                print(f"{name}: failed (see above); going on with the next model", flush=True)
        return
    if not todo:
        return
    data = data_mod.subset(data_mod.load(FLAGS.dataset, image_shape=(SIZE, SIZE, None)), FLAGS.train_images,
                           FLAGS.test_images, shuffle_seed=0, cache=True)
    with bench.LoadMonitor() as load:
        row = qat_row(todo[0], data, FLAGS.work)
    common = {"epochs": FLAGS.epochs, "qat_epochs": FLAGS.qat_epochs, "train_images": data.num_train,
              "test_images": data.num_test, "dataset": FLAGS.dataset, "device": bench.machine_name(),
              "command": " ".join([os.path.basename(sys.executable), *sys.argv]), "conditions": load.conditions()}
    bench.append_rows([{**common, **row}], FLAGS.out, COLUMNS)
    print(row, flush=True)


if __name__ == "__main__":
    app.run(main)
