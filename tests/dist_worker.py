"""Helper process for the distribution tests (run as a script, not collected by pytest).

usage: dist_worker.py mirrored OUT.npz           (2 logical CPU devices, MirroredStrategy, QAT)
       dist_worker.py multiworker OUT.npz        (TF_CONFIG names the cluster and this task)
"""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import kerasnets  # noqa: E402
from kerasnets.pipelines import data, quantize, train  # noqa: E402


def main(kind, out):
    if kind == "mirrored":
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    else:
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    digits = data.load("digits", image_shape=(16, 16, 1))

    def build():
        model = kerasnets.create_model("resnet8", input_shape=(16, 16, 1), classes=10)
        return quantize.quantize_model(model) if kind == "mirrored" else model

    config = {"epochs": 2, "batch_size": 32, "lr": 0.05, "augment": [], "seed": 1}
    result = train.fit(build, digits, os.path.join(os.path.dirname(out), f"run-{os.getpid()}"),
                       config=config, strategy=strategy, verbose=0)
    weights = result["model"].get_weights()
    np.savez(out, replicas=strategy.num_replicas_in_sync, loss=result["history"]["loss"],
             **{f"w{i}": w for i, w in enumerate(weights)})


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
