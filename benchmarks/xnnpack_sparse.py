"""Benchmark: host latency of a float model before and after pruning its 1x1 convolutions for
XNNPACK's sparse inference (Fast Sparse ConvNets); appends rows to results/xnnpack-sparse.csv.

    .venv/bin/python benchmarks/xnnpack_sparse.py --model mobilenet_v2_100 --size 224 --sparsity 0.8

What it does, per model:
  1. builds it from the registry and rebuilds its strided 'same' convolutions with explicit
     symmetric padding (`sparsity.explicit_padding`), the layout XNNPACK's sparse path needs;
  2. wraps it with `sparsity.prune_for_xnnpack` (TFMOT's PruneForLatencyOnXNNPack policy: only the
     1x1 convolutions) and lets TFMOT set the masks in one optimiser step at learning rate 0 — the
     weights are the random initial ones, which is enough for latency (XNNPACK's sparse kernels
     depend on the zero pattern's density, not on the values), then strips the wrappers;
  3. converts the dense model to an fp32 .tflite, and the pruned one with
     `tf.lite.Optimize.EXPERIMENTAL_SPARSITY`, which stores the sparse 1x1 kernels in TFLite's
     sparse format behind DENSIFY ops: the sign XNNPACK's delegate takes to plan sparse inference;
  4. times both with LiteRT's default XNNPACK delegate, one thread, in a fresh process each
     (`kerasnets.tools.bench.measure_in_child`), and reports median latencies and the speedup.

XNNPACK runs a 1x1 convolution sparse only when at least 2/3 of its weights are zero. On x86 it
never does on a CPU with AVX: its sparse kernels target SSE only, and XNNPACK keeps such CPUs on
the dense path (`xnn_is_chw_compatible_config`), so there the speedup is ~1.0 by design and the
figure that matters comes from an ARM device. The script says which case the host is.
"""
from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
from pathlib import Path

import numpy as np

import kerasnets  # noqa: F401  (selects tf-keras before TensorFlow loads)
import tensorflow as tf
import tf_keras as keras

from kerasnets.pipelines import convert
from kerasnets.pipelines.prune import sparsity
from kerasnets.tools import bench

REPO = Path(__file__).resolve().parents[1]
COLUMNS = ["model", "sparsity", "dense_ms", "sparse_ms", "speedup", "machine"]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["mobilenet_v2_100"],
                        help="registry names (MobileNetV1/V2-style models fit XNNPACK's sparse path)")
    parser.add_argument("--size", type=int, default=224, help="input height and width")
    parser.add_argument("--sparsity", type=float, default=0.8, help="zeros in every 1x1 conv kernel")
    parser.add_argument("--runs", type=int, default=50, help="timed invocations per model (median)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results", type=Path, default=REPO / "results" / "xnnpack-sparse.csv")
    args = parser.parse_args(argv)
    if args.size < 32:
        parser.error(f"--size must be >= 32, got {args.size}")
    if not sparsity.XNNPACK_MIN_SPARSITY <= args.sparsity < 1:
        parser.error(f"--sparsity must be in [2/3, 1): XNNPACK keeps dense kernels below 2/3 zeros; "
                     f"got {args.sparsity}")
    if args.runs < 1 or args.threads < 1:
        parser.error("--runs and --threads must be >= 1")
    return args


def sparse_path_available() -> tuple[bool, str]:
    """Whether XNNPACK can take its sparse (NCHW) path on this host, and why."""
    machine = platform.machine().lower()
    if machine not in ("x86_64", "amd64", "i386", "i686", "x86"):
        return True, f"{machine}: XNNPACK has sparse kernels for this architecture"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            flags = next((line.split(":", 1)[1].split() for line in info if line.startswith("flags")), [])
    except OSError:
        flags = []
    if "avx" in flags:
        return False, ("x86 with AVX: XNNPACK keeps dense kernels here (its sparse kernels are SSE-only), "
                       "so dense and sparse should time alike; measure on ARM for the real speedup")
    return True, "x86 without AVX: XNNPACK's SSE sparse kernels apply"


def _fp32_tflite(model, *, sparse: bool) -> bytes:
    converter = convert.batch1_converter(model)
    if sparse:
        converter.optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
    return converter.convert()


def sparse_model(name: str, size: int, target: float, seed: int):
    """(dense model, pruned and stripped model), both with XNNPACK's explicit padding."""
    keras.utils.set_random_seed(seed)
    dense = sparsity.explicit_padding(kerasnets.create_model(name, input_shape=(size, size, 3)))
    pruned = sparsity.prune_for_xnnpack(dense, sparsity=target, frequency=1)
    pruned.compile(keras.optimizers.SGD(0.0), "categorical_crossentropy")
    x = np.random.default_rng(seed).normal(size=(1, size, size, 3)).astype("float32")
    y = np.eye(pruned.output_shape[-1], dtype="float32")[:1]
    pruned.fit(x, y, epochs=1, verbose=0, callbacks=sparsity.callbacks())  # first mask update
    return dense, sparsity.strip(pruned)


def one_by_one_sparsity(model) -> float:
    """Zero fraction over the 1x1 Conv2D kernels (the weights the XNNPACK policy prunes)."""
    report = sparsity.sparsity_report(model)["layers"]
    names = [n for n in report if isinstance(model.get_layer(n), keras.layers.Conv2D)
             and model.get_layer(n).kernel_size == (1, 1)]
    zeros = sum(report[n] * model.get_layer(n).kernel.shape.num_elements() for n in names)
    return zeros / sum(model.get_layer(n).kernel.shape.num_elements() for n in names)


def main(argv=None):
    args = parse_args(argv)
    machine = bench.machine_name()
    available, why = sparse_path_available()
    print(f"sparse path {'available' if available else 'NOT available'} on this host: {why}")
    rows = []
    for name in args.models:
        dense, pruned = sparse_model(name, args.size, args.sparsity, args.seed)
        measured = one_by_one_sparsity(pruned)
        dense_tflite = _fp32_tflite(dense, sparse=False)
        sparse_tflite = _fp32_tflite(pruned, sparse=True)
        ops = convert.graph_summary(sparse_tflite)["ops"]
        if "DENSIFY" not in ops:
            print(f"warning: {name}: the converter stored no sparse weights (no DENSIFY op); "
                  "XNNPACK will run it dense", file=sys.stderr)
        timings = [bench.measure_in_child(t, threads=args.threads, runs=args.runs, xnnpack=True)
                   for t in (dense_tflite, sparse_tflite)]
        dense_ms, sparse_ms = timings[0]["median"], timings[1]["median"]
        row = {"model": f"{name}@{args.size}", "sparsity": round(measured, 3),
               "dense_ms": round(dense_ms, 3), "sparse_ms": round(sparse_ms, 3),
               "speedup": round(dense_ms / sparse_ms, 3), "machine": machine}
        print(f"{row['model']}: 1x1 sparsity {measured:.3f}, dense {dense_ms:.2f} ms, sparse "
              f"{sparse_ms:.2f} ms ({row['speedup']:.2f}x), .tflite {len(dense_tflite) / 1e6:.1f} -> "
              f"{len(sparse_tflite) / 1e6:.1f} MB, {args.threads} thread(s), median of {args.runs}")
        rows.append(row)
    bench.append_rows(rows, os.fspath(args.results), COLUMNS)
    print(f"machine: {machine}\ncommand: {shlex.join([sys.executable, *sys.argv])}\n"
          f"appended {len(rows)} row(s) to {args.results}")


if __name__ == "__main__":
    main()
