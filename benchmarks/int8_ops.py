"""Benchmark: which ops int8 speeds up on this CPU, one op kind at a time, and what the XNNPACK
lowering's choices rest on; appends one row per op and shape to results/int8-by-op.csv.

    .venv/bin/python benchmarks/int8_ops.py
    .venv/bin/python benchmarks/int8_ops.py --cases depthwise_5x5,channel_shuffle

Each case is an op at a shape the zoo's models hold, between two 1x1 convolutions that keep its
channels; the same model without the op is timed in the same rounds, and the op's time is the
difference (so LiteRT's fixed cost per invoke and the two convolutions cancel). The forms timed,
interleaved in fresh processes (LiteRT, XNNPACK, 1 thread; each model's figure the lowest of its
rounds' medians): fp32 and int8 lowered by `lower_for_xnnpack` (what the app model ships, lowered
for a CPU with int8 dot products whatever this one has, so its rewrites are timed everywhere), int8
as converted, and for a channel shuffle int8 in both forms the lowering chooses between by width
(its TRANSPOSE as a float island, or the whole shuffle as one 1x1 convolution). A difference
under ~1 us is within the timing noise. Each row names the machine with its int8 instruction-set
features and the load it ran under.
"""
from __future__ import annotations

import contextlib
import shlex
import sys
from pathlib import Path

import numpy as np
from absl import app, flags, logging

import tf_keras as keras
from kerasnets import blocks
from kerasnets import layers as knl
from kerasnets.pipelines import convert, xnnpack
from kerasnets.tools import bench

REPO = Path(__file__).resolve().parents[1]
L = keras.layers

# case -> (op applied to a (1, H, W, C) tensor, [(H, C), ...]) at shapes the zoo's models hold
CASES = {
    "depthwise_3x3": (lambda x: L.DepthwiseConv2D(3, padding="same")(x), [(56, 16), (28, 72), (14, 240)]),
    "depthwise_5x5": (lambda x: L.DepthwiseConv2D(5, padding="same")(x), [(14, 120), (14, 240), (7, 576)]),
    "depthwise_3x3_narrow": (lambda x: L.DepthwiseConv2D(3, padding="same")(x), [(112, 4), (112, 8)]),
    "conv_1x1": (lambda x: L.Conv2D(x.shape[-1], 1)(x), [(28, 48), (14, 240)]),
    "grouped_conv_1x1": (lambda x: L.Conv2D(x.shape[-1], 1, groups=2)(x), [(14, 40), (14, 240)]),
    "hard_swish": (lambda x: knl.HardSwish()(x), [(14, 240), (112, 16)]),
    "se_multiply": (lambda x: L.Multiply()([x, L.GlobalAveragePooling2D(keepdims=True)(x)]), [(14, 240), (56, 16)]),
    "add": (lambda x: L.Add()([x, x]), [(14, 40)]),
    "channel_shuffle": (lambda x: blocks.channel_shuffle(x, 2, name="shuffle"),
                        [(56, 24), (16, 48), (16, 64), (8, 96), (14, 96)]),
}
COLUMNS = ["op", "shape", "fp32_us", "int8_us", "speedup", "int8_as_converted_us", "int8_shuffle_island_us",
           "int8_shuffle_conv_us", "rounds", "conditions", "machine", "command"]

FLAGS = flags.FLAGS
flags.DEFINE_list("cases", list(CASES), "op kinds to time")
flags.DEFINE_integer("rounds", 3, "interleaved turns over the forms of a case", lower_bound=1)
flags.DEFINE_integer("runs", 200, "timed invokes per figure", lower_bound=1)
flags.DEFINE_string("out", str(REPO / "results" / "int8-by-op.csv"), "CSV file rows are appended to")


def _models(op, height: int, channels: int) -> tuple[keras.Model, keras.Model]:
    """(convolution, op, convolution) and the same without the op."""
    inputs = keras.Input((height, height, channels))
    before = L.Conv2D(channels, 1)(inputs)
    with_op = keras.Model(inputs, L.Conv2D(channels, 1)(op(before)))
    return with_op, keras.Model(inputs, L.Conv2D(channels, 1)(before))


@contextlib.contextmanager
def _shuffle_conv_limit(channels: int):
    """lower_for_xnnpack with shuffles of up to `channels` channels as convolutions (rewrite 4),
    wider ones as float islands (0: every shuffle an island)."""
    saved = xnnpack.SHUFFLE_CONV_MAX_CHANNELS
    xnnpack.SHUFFLE_CONV_MAX_CHANNELS = channels
    try:
        yield
    finally:
        xnnpack.SHUFFLE_CONV_MAX_CHANNELS = saved


def _forms(model: keras.Model, case: str) -> dict[str, bytes]:
    calibration = np.random.default_rng(0).normal(size=(16, *model.input_shape[1:])).astype("float32")
    int8 = convert.export(model, "int8", calibration)
    forms = {"fp32": xnnpack.lower_for_xnnpack(convert.export(model, "fp32")),
             "int8": xnnpack.lower_for_xnnpack(int8), "int8_as_converted": int8}
    if case == "channel_shuffle":  # both forms the lowering chooses between, at every width
        for form, limit in (("int8_shuffle_island", 0), ("int8_shuffle_conv", model.input_shape[-1])):
            with _shuffle_conv_limit(limit):
                forms[form] = xnnpack.lower_for_xnnpack(int8)
    return forms


def measure(case: str, height: int, channels: int) -> dict:
    """Microseconds per form of the op alone: with the op less without it, each the lowest of its
    rounds' medians (a round another process slowed is dropped, not averaged in)."""
    with_op, without = (_forms(m, case) for m in _models(CASES[case][0], height, channels))
    times = {(kind, form): [] for kind in ("with", "without") for form in with_op}
    for _ in range(FLAGS.rounds):
        for form in with_op:
            for kind, forms in (("with", with_op), ("without", without)):
                result = bench.measure_in_child(forms[form], threads=1, runs=FLAGS.runs, xnnpack=True)
                times[kind, form].append(result["median"])
    return {form: 1000 * (min(times["with", form]) - min(times["without", form])) for form in with_op}


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    unknown = sorted(set(FLAGS.cases) - set(CASES))
    if unknown:
        raise app.UsageError(f"--cases: unknown {', '.join(unknown)}; choose from {', '.join(CASES)}")
    command = shlex.join([Path(sys.executable).name, *sys.argv])
    for case in FLAGS.cases:
        for height, channels in CASES[case][1]:
            with bench.LoadMonitor() as load:
                us = measure(case, height, channels)
            row = {"op": case, "shape": f"{height}x{height}x{channels}", "fp32_us": round(us["fp32"], 1),
                   "int8_us": round(us["int8"], 1), "speedup": round(us["fp32"] / us["int8"], 2) if us["int8"] > 0 else "",
                   "int8_as_converted_us": round(us["int8_as_converted"], 1),
                   **{f"{form}_us": round(us[form], 1) if form in us else ""
                      for form in ("int8_shuffle_island", "int8_shuffle_conv")},
                   "rounds": FLAGS.rounds, "conditions": load.conditions(), "machine": bench.machine_name(),
                   "command": command}
            bench.append_rows([row], FLAGS.out, COLUMNS)
            print(f"{case} {row['shape']}: fp32 {row['fp32_us']} us, int8 {row['int8_us']} us "
                  f"({row['speedup']}x), as converted {row['int8_as_converted_us']} us", flush=True)


if __name__ == "__main__":
    app.run(main)
