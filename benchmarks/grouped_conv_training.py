"""Benchmark: training step time of the families with grouped convolutions, as tf_keras runs a
grouped conv (one XLA-compiled op) and group by group (`pipelines.train`'s
`grouped_convolutions_by_groups`, what `train.fit` uses); appends rows to
results/grouped-conv-training.csv.

    .venv/bin/python benchmarks/grouped_conv_training.py              # one variant per family
    .venv/bin/python benchmarks/grouped_conv_training.py --models mgiad_cifar

Each model (32x32x3 input, 10 classes, SGD, batch --batch_size of random images) runs one
untimed step per way, then --steps timed steps each way in turns, --rounds times; a figure is
the median step, so load that comes and goes hits both. The speedup is a ratio of figures
measured in the same run; each row names the machine and the load it ran under.
"""
from __future__ import annotations

import shlex
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from absl import app, flags, logging

import kerasnets
from kerasnets.pipelines import train
from kerasnets.tools import bench

REPO = Path(__file__).resolve().parents[1]
FLAGS = flags.FLAGS
flags.DEFINE_list("models", [], "registry names (default: the first variant of every family that has a "
                  "grouped convolution)")
flags.DEFINE_integer("batch_size", 128, "images per step", lower_bound=1)
flags.DEFINE_integer("steps", 2, "timed steps per way and round", lower_bound=1)
flags.DEFINE_integer("rounds", 2, "turns over the two ways", lower_bound=1)
flags.DEFINE_string("out", str(REPO / "results" / "grouped-conv-training.csv"), "CSV file rows are appended to")

COLUMNS = ["model", "input", "batch_size", "grouped_convs", "step_s_keras", "step_s_by_groups", "speedup",
           "rounds", "conditions", "machine", "command"]
SHAPE = (32, 32, 3)


def grouped_convs(model) -> int:
    import tf_keras as keras

    return sum(isinstance(layer, keras.layers.Conv2D) and layer.groups > 1 for layer in model.layers)


def grouped_families() -> list[str]:
    """The first variant of each family (by paper) that builds at 32x32 and has a grouped conv."""
    return [name for name in kerasnets.one_per_family() if kerasnets.model_info(name).min_size <= SHAPE[0]
            and grouped_convs(kerasnets.create_model(name, input_shape=SHAPE))]


def _stepper(name: str, by_groups: bool):
    """A compiled model and a function running one training step on it, the way asked for."""
    import tf_keras as keras

    model = kerasnets.create_model(name, input_shape=SHAPE, classes=10)
    model.compile(keras.optimizers.SGD(0.01), "categorical_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.random((FLAGS.batch_size, *SHAPE), dtype=np.float32)
    y = keras.utils.to_categorical(rng.integers(0, 10, FLAGS.batch_size), 10)

    def step() -> float:
        start = time.perf_counter()
        if by_groups:
            with train.grouped_convolutions_by_groups():
                model.train_on_batch(x, y)
        else:
            model.train_on_batch(x, y)
        return time.perf_counter() - start

    step()  # traces the train function (inside the context when by_groups)
    return model, step


def measure(name: str, command: str) -> dict:
    model, keras_step = _stepper(name, by_groups=False)
    _, split_step = _stepper(name, by_groups=True)
    times = {"keras": [], "by_groups": []}
    with bench.LoadMonitor() as load:
        for _ in range(FLAGS.rounds):
            times["keras"] += [keras_step() for _ in range(FLAGS.steps)]
            times["by_groups"] += [split_step() for _ in range(FLAGS.steps)]
    keras_s, split_s = statistics.median(times["keras"]), statistics.median(times["by_groups"])
    return {"model": name, "input": "x".join(map(str, SHAPE)), "batch_size": FLAGS.batch_size,
            "grouped_convs": grouped_convs(model), "step_s_keras": round(keras_s, 3),
            "step_s_by_groups": round(split_s, 3), "speedup": round(keras_s / split_s, 1), "rounds": FLAGS.rounds,
            "conditions": load.conditions(), "machine": bench.machine_name(), "command": command}


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    command = shlex.join([Path(sys.executable).name, *sys.argv])
    for name in FLAGS.models or grouped_families():
        row = measure(name, command)
        bench.append_rows([row], FLAGS.out, COLUMNS)
        print(f"{name}: {row['grouped_convs']} grouped convs, step {row['step_s_keras']} s as tf_keras runs them, "
              f"{row['step_s_by_groups']} s group by group ({row['speedup']}x)", flush=True)


if __name__ == "__main__":
    app.run(main)
