"""Helper process for the distribution tests (run as a script, not collected by pytest).

usage: dist_worker.py mirrored OUT.npz           (2 logical CPU devices, MirroredStrategy, QAT)
       dist_worker.py multiworker OUT.npz        (TF_CONFIG names the cluster and this task)
       dist_worker.py replicas OUT.npz           (the same net trained on 1 and on 2 replicas)
"""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import kerasnets  # noqa: E402
from kerasnets.pipelines import data, quantize, train  # noqa: E402


def no_batchnorm_net():
    """A small conv net without BatchNorm: per-replica BatchNorm statistics differ from the global
    batch's by design, so only a net without it can be compared replica count to replica count."""
    import tf_keras as keras

    inputs = keras.Input((16, 16, 1))
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu", name="conv1")(inputs)
    x = keras.layers.Conv2D(16, 3, strides=2, activation="relu", name="conv2")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(10, activation="softmax", name="head")(x))


def one_and_two_replicas(out):
    """Train the same net from the same weights on one device and on two replicas with the same
    global batch; save both final weights."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    digits = data.load("digits", image_shape=(16, 16, 1))
    config = {"epochs": 2, "batch_size": 32, "lr": 0.05, "augment": [], "seed": 1, "weight_decay": 0.0}
    initial = no_batchnorm_net().get_weights()

    def build():
        model = no_batchnorm_net()
        model.set_weights(initial)
        return model

    saved = {}
    for tag, strategy in (("one", tf.distribute.get_strategy()),  # the default: one device
                          ("two", tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))):
        result = train.fit(build, digits, os.path.join(os.path.dirname(out), f"run-{tag}"), config=config,
                           strategy=strategy, verbose=0)
        saved[f"{tag}_replicas"] = strategy.num_replicas_in_sync
        saved.update({f"{tag}_w{i}": w for i, w in enumerate(result["model"].get_weights())})
    np.savez(out, **saved)


def main(kind, out):
    if kind == "replicas":
        return one_and_two_replicas(out)
    if kind == "mirrored":
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    else:
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    digits = data.load("digits", image_shape=(16, 16, 1))

    def build():
        model = kerasnets.create_model("resnet8", input_shape=(16, 16, 1), classes=10)
        if kind != "mirrored":
            return model
        return quantize.quantize_model(model, calibration=data.representative_images(digits, 32))

    config = {"epochs": 2, "batch_size": 32, "lr": 0.05, "augment": [], "seed": 1}
    result = train.fit(build, digits, os.path.join(os.path.dirname(out), f"run-{os.getpid()}"),
                       config=config, strategy=strategy, verbose=0)
    weights = result["model"].get_weights()
    np.savez(out, replicas=strategy.num_replicas_in_sync, loss=result["history"]["loss"],
             **{f"w{i}": w for i, w in enumerate(weights)})


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
