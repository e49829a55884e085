"""The `kerasnets` command line (absl): `kerasnets run | zoo | profile | export | bench | compress`.

Each subcommand defines only its own flags (absl module `kerasnets <command>`), so one flag name can
mean different things in different commands and `kerasnets <command> --help` lists exactly them.
Library errors name function arguments in backquotes (`name`, `name=value`); `translate` turns
those into the command's flags before printing `kerasnets <command>: <message>`.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import os
import re
import sys
from typing import Callable

from absl import app, flags

from kerasnets.tools import console

FLAGS = flags.FLAGS


class _Definer:
    """Defines the flags one subcommand owns: `d.string("out", None, "...")` is
    flags.DEFINE_string(..., module_name="kerasnets <command>"), so that `kerasnets <command> --help`
    can list exactly them."""

    def __init__(self, command: str):
        self.module = f"kerasnets {command}"

    def __getattr__(self, kind):
        define = getattr(flags, f"DEFINE_{kind}")
        return lambda *args, **kwargs: define(*args, module_name=self.module, **kwargs)


# ---------------------------------------------------------------------------------------------
# flags shared by several subcommands (one definition each; the meaning is the same everywhere)


def _common_flags(d):
    """Flags every subcommand has."""
    d.bool("verbose", False, "Show everything: TensorFlow's C++, converter and Python logs (quiet by default).")


def _model_flags(d, *, classes=False, size_default="the model's default"):
    d.string("model", None, "Registered model name (see kerasnets zoo).")
    d.integer("input_size", None, f"Square input size instead of {size_default}.", lower_bound=1)
    if classes:
        d.integer("classes", None, "Number of classes (default: the model's).", lower_bound=1)


def _keras_flag(d):
    d.string("keras", None, "A .keras/.h5 model file (float or QAT; a Keras 3 .keras file is rebuilt as "
             "tf_keras) instead of --model.")


def _dataset_help():
    from kerasnets.pipelines import data

    return ", ".join(("digits", *data.NAMED, "imagefolder:PATH", "npz:PATH"))


def _mode_flag(d, help_text):
    from kerasnets.pipelines import convert

    d.enum("mode", "int8", convert.MODES, help_text)


def _runs_flag(d, runs):
    d.integer("runs", runs, "Timed runs per model (the median is reported).", lower_bound=1)


# ---------------------------------------------------------------------------------------------
# each subcommand's own flags


def _zoo_flags(d):
    d.string("filter", "*", "Wildcard over model names, e.g. 'ghostnet_*'.")
    d.integer("input_size", None, "Square input size instead of each model's default.", lower_bound=1)
    _runs_flag(d, 30)
    d.string("out", None, "CSV file the rows are merged into (default results/zoo.csv).")


def _profile_flags(d):
    _model_flags(d, classes=True)
    d.bool("json", False, "Print the full profile as JSON.")
    d.bool("csv", False, "Print the per-layer table as CSV.")


def _export_flags(d):
    from kerasnets.pipelines import convert
    from kerasnets.tools import export

    _model_flags(d)
    _keras_flag(d)
    d.string("saved_model", None, "A SavedModel folder instead of --model.")
    d.string("out", None, "Output folder: OUT/<name>.tflite (and OUT/micro/ with --micro).")
    _mode_flag(d, "TFLite mode.")
    d.enum("io_type", "int8", convert.IO_TYPES, "Input/output type of --mode int8.")
    d.enum("app_io_type", "uint8", ("uint8", "float", "none"),
           "Input/output type of OUT/<name>_app.tflite, the RGB copy of an int8 classifier that the Android "
           "Task Library and MediaPipe image classifiers take; none writes no app copy.")
    d.bool("app_int8_dot_product", True,
           "The app copy's CPU has int8 dot products (Arm dotprod, phones since Armv8.2; x86 VNNI); "
           "--noapp_int8_dot_product for e.g. Cortex-A53/A72 or AVX2-only x86 leaves out the XNNPACK "
           "rewrites that pay only with them.")
    d.enum("condensed_index", "folded", ("folded", "gather"),
           "A CondenseNet/EffCNet's learned group convs: folded into dense 1x1 convs (every CPU fast path "
           "and NPU runs them), or gather: the paper's GATHER + grouped conv, a smaller file where flash is "
           "the budget and a CPU runs it (kerasnets.condensenet.index_as_gather; a float model only).")
    d.bool("micro", False, "Also write TFLite Micro sources to OUT/micro/.")
    d.string("calibration", "digits", "Data set for int8 calibration and the parity gates "
             f"({_dataset_help()}).")
    d.string("labels", None, "Text file with one class label per line.")
    d.integer("max_arena", None, "Refuse a model whose TFLite Micro arena exceeds this many bytes.",
              lower_bound=1)
    d.float("min_agreement", export.MIN_AGREEMENT, "Refuse (write nothing) when the quantised model agrees "
            "with Keras on the top-1 class of fewer of the held-out --calibration images.",
            lower_bound=0, upper_bound=1)
    d.bool("tensor_checksums", False, "With --micro: also the CRC-32 of every activation tensor for the "
           "first golden input (checked by a firmware built with KN_TENSOR_CHECKSUMS).")


def _bench_flags(d):
    from kerasnets.tools import bench

    d.enum("target", "host", bench.TARGETS, "Where to run the model (ethos-u*: compiled by Arm's Vela, "
           "whose estimate it reports).")
    d.string("tflite", None, "A .tflite file instead of --model.")
    _model_flags(d)
    _mode_flag(d, "TFLite mode --model is exported in.")
    _runs_flag(d, 30)
    d.integer("threads", 1, "Interpreter threads.", lower_bound=1)
    d.bool("xnnpack", True, "Use LiteRT's default XNNPACK delegate (host).")
    d.bool("record", False, "Append the row to results/bench-<target>-<machine>.csv (host: CPU model "
           "and cores; the row's machine column also names the ISA features).")
    d.bool("by_block", False, "--target host: time --model's fp32 and int8 block by block (prefixes cut "
           "after each block, LiteRT + XNNPACK, 1 thread) and print one row per block; with --record, "
           "append them to results/int8-by-block.csv.")
    android = "--target android: "
    d.string("parse", None, android + "parse a saved benchmark_model log.")
    d.string("adb", None, android + "adb binary (default: adb on PATH).")
    d.string("serial", None, android + "device serial (adb -s).")
    d.string("benchmark_binary", None, android + "TFLite benchmark_model binary built for the phone "
             "(bazel build --config=android_arm64 @org_tensorflow//tensorflow/lite/tools/benchmark:benchmark_model).")
    d.string("apk", None, android + "benchmark APK to install and run instead of --benchmark_binary "
             "(the kerasnets APK, or TFLite's with --apk_activity).")
    d.string("apk_activity", None, android + "activity of --apk (default the kerasnets APK's; TFLite's: "
             "org.tensorflow.lite.benchmark/.BenchmarkModelActivity).")
    d.string("stage_apk", None, android + "kerasnets source tree (the folder with WORKSPACE, e.g. '.') whose "
             "benchmark APK package gets the --tflite models (comma-separated) to build with Bazel.")
    _cortex_m_flags(d)


def _cortex_m_flags(d):
    from kerasnets.micro import firmware_build
    from kerasnets.tools import cortex_m

    m4 = "--target cortex-m4: "
    d.string("tflm_tree", None, m4 + "TFLite Micro tree (folder or .tar.gz from create_tflm_tree.py; "
             f"default ${cortex_m.TFLM_TREE_ENV}).")
    d.enum("kernels", None, firmware_build.KERNELS, m4 + "kernel set the tree must hold (checked).")
    d.float("clock_mhz", cortex_m.DEFAULT_CLOCK_MHZ, m4 + "core clock for est_ms (one cycle per "
            "instruction: a lower bound).", lower_bound=0)


def _training_flags(d):
    d.string("dataset", None, f"Training data: {_dataset_help()}.")
    d.integer("epochs", None, "Training epochs.", lower_bound=1)
    d.integer("batch_size", None, "Training batch size.", lower_bound=1)


def _compress_flags(d):
    from kerasnets.pipelines import prune

    _model_flags(d, classes=True)
    _keras_flag(d)
    methods = "; ".join(f"{name}: {text}" for name, text in prune.methods().items())
    d.enum("method", None, prune.METHODS, f"Compression method ({methods}).")
    d.float("ratio", None, "Fraction in (0, 1) of the prunable channels (structured methods) or "
            "weights (magnitude, m_by_n) to remove.")
    d.string("target", None, "A budget KEY=VALUE instead of --ratio (params=50k, macs=20M, int8_kb=40, "
             "peak_ram=64kB), or several met together: int8_kb=90,peak_ram=55kB.")
    _training_flags(d)
    d.bool("from_scratch", False, "Train the pruned architecture from a fresh initialisation for "
           "--epochs instead of fine-tuning the surviving weights.")
    d.float("strength", None, "Sparsity regulariser strength (slimming: L1 on BN scales, default 1e-4; "
            "scl: connection count, default 0.5).", lower_bound=0)
    d.string("out", None, "The compressed model, FILE.keras.")


_STRATEGIES = ("default", "mirrored", "multiworker")
# Shortcut flags of the run command -> run config keys (every key is also a --dotted.key flag).
_RUN_SHORTCUTS = {"model": "model", "dataset": "data.dataset", "input_size": "data.input_size",
                  "channels": "data.channels", "epochs": "train.epochs", "batch_size": "train.batch_size",
                  "out": "out", "data_dir": "data.data_dir", "strict": "data.strict"}


def _frontier_flags(d):
    from kerasnets.tools import frontier

    d.string("dataset", "cifar10", f"Data set ({_dataset_help()}); the budget and every row use it.")
    d.integer("epochs", 30, "Training epochs of every row (reference and candidates).", lower_bound=1)
    d.enum("recipe", frontier.DEFAULT_RECIPE, list(frontier.RECIPES),
           "Training recipe (pipelines.train options; the default won the ablation in results/recipe.csv).")
    d.integer("top", 2, "Ranked candidates trained for --epochs.", lower_bound=0)
    d.integer("rank_epochs", 4, "Epochs of the cheap ranking run.", lower_bound=1)
    d.integer("rank_images", 20000, "Training images of the cheap ranking run.", lower_bound=100)
    d.multi_string("candidates", None, "Train this candidate (a label as in the rank table, e.g. "
                   "'resnet_cifar[depth=14,width=0.625]'; repeat the flag for more) instead of screening "
                   "and ranking.")
    d.bool("reference", True, "Train the reference (ResNet-8) too; --noreference when its row exists.")
    d.multi_string("compress", None, "Also bring this registered model into the budget: --pre_epochs of the "
                   "recipe, L1 channel pruning to the measured int8 size and arena, then the rest of --epochs "
                   "fine-tuning (repeat the flag for more).")
    d.integer("pre_epochs", 10, "Epochs a --compress model trains before it is pruned.", lower_bound=1)
    d.string("teacher", None, "Distil every row from this registered model, trained first with the same "
             "recipe and epochs (its own row is recorded too).")
    d.integer("teacher_epochs", None, "Epochs the --teacher trains (default --epochs; fewer keep its training "
              "within the reference's wall-clock).", lower_bound=1)
    d.string("out", os.path.join("results", "frontier.csv"), "CSV the rows are appended to; the screen "
             "and rank tables go beside it.")
    d.string("work", os.path.join("runs", "frontier"), "Folder for checkpoints and models.")


def _run_flags(d):
    from kerasnets.tools import run

    d.string("config", None, "YAML or JSON file of run config keys.")
    d.enum("from_stage", None, run.STAGES, "Re-run this stage and every later one.")
    d.bool("resume", False, "Continue an interrupted training from its last epoch.")
    d.enum("strategy", "default", _STRATEGIES, "tf.distribute strategy (multiworker reads TF_CONFIG).")
    _model_flags(d, size_default="data.input_size")
    _training_flags(d)
    d.integer("channels", None, "Input channels (default: follow the data).", lower_bound=1)
    d.string("data_dir", None, "tensorflow-datasets data folder.")
    d.bool("strict", None, "Stop on an unreadable image instead of skipping it.")
    d.string("out", None, "Run folder (default runs/<model>-<dataset>).")
    d.bool("json", False, "End with the metrics as one JSON line instead of the summary table.")
    for key, default in sorted(run.flatten(run.default_config().to_dict()).items()):
        if key not in FLAGS:
            d.string(key, None, f"Run config key (default: {default!r}).")


def _zoo() -> int:
    from tqdm import tqdm

    from kerasnets.tools import bench, zoo

    names = zoo.select(FLAGS.filter)
    machine = bench.machine_name()
    out = FLAGS.out or "results/zoo.csv"
    rows, failures = [], []
    progress = tqdm(names, desc="zoo", unit="model", file=sys.stderr)
    for name in progress:
        progress.set_postfix_str(name)
        try:
            row = zoo.zoo_row(name, FLAGS.input_size, runs=FLAGS.runs, machine=machine)
        except ValueError as error:  # e.g. an --input_size below the model's minimum
            failures.append(f"{name}: {error}")
            continue
        rows.append(row)
        zoo.merge_row(out, row)
    _print_table(rows, zoo.COLUMNS[:-1])
    print(f"\n{len(rows)} models on {machine}; merged into {out}")
    for failure in failures:
        print(f"skipped {failure}", file=sys.stderr)
    return 1 if failures and not rows else 0


def _print_table(rows, columns):
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) if rows else len(c) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for row in rows:
        print("  ".join(str(row[c]).ljust(widths[c]) for c in columns))


def _profile() -> int:
    import kerasnets
    from kerasnets.pipelines import saving

    if not FLAGS.model:
        raise app.UsageError("profile needs --model NAME (see kerasnets zoo or kerasnets.list_models())")
    stats = kerasnets.profile(saving.create_at_size(FLAGS.model, FLAGS.input_size, FLAGS.classes))
    if FLAGS.json:
        print(json.dumps(stats, indent=1))
    elif FLAGS.csv:
        writer = csv.DictWriter(sys.stdout, fieldnames=list(stats["layers"][0]))
        writer.writeheader()
        writer.writerows(stats["layers"])
    else:
        rows = [{**r, "output_shape": "x".join(map(str, r["output_shape"]))} for r in stats["layers"]]
        _print_table(rows, ["name", "type", "output_shape", "params", "macs", "live_activation_bytes"])
        summary = {k: v for k, v in stats.items() if k != "layers"}
        print("\n" + "\n".join(f"{k}: {v}" for k, v in summary.items()))
    return 0


def _read_labels(path):
    try:
        with open(path, encoding="utf-8") as f:
            return [line.strip() for line in f if line.strip()]
    except OSError as error:
        raise ValueError(f"--labels {path}: {error.strerror}") from None


def _with_gathered_index(model):
    from kerasnets import condensenet

    try:
        return condensenet.index_as_gather(model)
    except ValueError as error:
        raise ValueError(f"--condensed_index gather: {error} (it applies to a float CondenseNet or EffCNet; "
                         "a QAT model exports in the form it was trained in)") from None


def _export() -> int:
    from kerasnets.pipelines import saving
    from kerasnets.tools import export

    sources = [f for f in ("model", "keras", "saved_model") if getattr(FLAGS, f)]
    if len(sources) != 1:
        raise app.UsageError("export needs exactly one of --model NAME, --keras FILE, --saved_model DIR")
    if not FLAGS.out:
        raise app.UsageError("export needs --out DIR")
    if FLAGS.input_size and not FLAGS.model:
        raise app.UsageError("export --input_size sets the size of a --model; a file keeps its own")
    if FLAGS.model:
        model, name = saving.create_at_size(FLAGS.model, FLAGS.input_size), FLAGS.model
    elif FLAGS.keras:
        model = saving.load_keras(FLAGS.keras)
        name = os.path.splitext(os.path.basename(FLAGS.keras))[0]
    else:
        model = saving.load_saved_model(FLAGS.saved_model)
        name = model.name
    if FLAGS.condensed_index == "gather":
        model = _with_gathered_index(model)
    summary = export.export_model(
        model, name=name, mode=FLAGS.mode, out_dir=FLAGS.out, calibration=FLAGS.calibration,
        io_type=FLAGS.io_type, micro=FLAGS.micro,
        labels=_read_labels(FLAGS.labels) if FLAGS.labels else None, max_arena=FLAGS.max_arena,
        min_agreement=FLAGS.min_agreement, tensor_checksums=FLAGS.tensor_checksums,
        app_io_type=None if FLAGS.app_io_type == "none" else FLAGS.app_io_type,
        app_int8_dot_product=FLAGS.app_int8_dot_product)
    summary["condensed_index"] = FLAGS.condensed_index
    print(json.dumps(summary))
    return 0


def _bench() -> int:
    from kerasnets.tools import android, bench

    if FLAGS.by_block:
        return _bench_by_block()
    if FLAGS.target == "android":
        if FLAGS.parse:
            try:
                with open(FLAGS.parse, encoding="utf-8", errors="replace") as log:
                    text = log.read()
            except OSError as error:
                raise ValueError(f"--parse {FLAGS.parse}: {error.strerror}") from None
            print(json.dumps(android.parse_benchmark_log(text)))
            return 0
        if FLAGS.stage_apk:
            models = FLAGS.tflite.split(",") if FLAGS.tflite else []
            print(json.dumps(android.stage_apk(FLAGS.stage_apk, models)))
            return 0
        if not FLAGS.tflite or bool(FLAGS.benchmark_binary) == bool(FLAGS.apk):
            raise app.UsageError("bench --target android needs --tflite FILE and one of --benchmark_binary "
                                 "FILE or --apk FILE (or --parse LOGFILE, or --stage_apk DIR)")
        adb = android.Adb(FLAGS.adb, FLAGS.serial)
        sweep = {"threads": (1, max(FLAGS.threads, 4)), "runs": FLAGS.runs}
        if FLAGS.apk:
            rows = android.run_apk_benchmarks(adb, [FLAGS.tflite], FLAGS.apk,
                                              activity=FLAGS.apk_activity or android.APK_ACTIVITY, **sweep)
        else:
            rows = android.run_benchmarks(adb, [FLAGS.tflite], FLAGS.benchmark_binary, **sweep)
        for row in rows:
            print(json.dumps(row))
        if FLAGS.record:
            bench.append_rows(rows, f"results/bench-android-{bench.slug(rows[0]['device'])}.csv",
                              android.COLUMNS)
        return 0
    if FLAGS.target == "cortex-m4":
        return _bench_cortex_m4()
    if FLAGS.target.startswith("ethos-u"):
        return _bench_ethos_u()
    row = bench.host_row(_bench_model_bytes(), threads=FLAGS.threads, runs=FLAGS.runs,
                         xnnpack=FLAGS.xnnpack, command=" ".join(["kerasnets"] + sys.argv[1:]))
    print(json.dumps(row))
    if FLAGS.record:
        path = f"results/bench-host-{bench.machine_slug()}.csv"  # model + cores; the row names the ISA
        bench.append_rows([row], path, bench.COLUMNS)
        print(f"appended to {path}", file=sys.stderr)
    return 0


def _bench_by_block() -> int:
    from kerasnets.tools import bench, int8_blocks

    if FLAGS.target != "host":
        raise app.UsageError(f"bench --by_block times on this machine: --target host, not {FLAGS.target}")
    if FLAGS.tflite or not FLAGS.model:
        raise app.UsageError("bench --by_block cuts a Keras model into prefixes: give --model NAME, not --tflite")
    if FLAGS.threads != 1 or not FLAGS.xnnpack:
        raise app.UsageError("bench --by_block times on 1 thread with XNNPACK: drop --threads and --noxnnpack")
    model, images = _calibrated_model()
    rows = int8_blocks.int8_gain_by_block(model, images, name=FLAGS.model, runs=FLAGS.runs,
                                          command=" ".join(["kerasnets"] + sys.argv[1:]))
    for row in rows:
        print(json.dumps(row))
    if FLAGS.record:
        bench.append_rows(rows, "results/int8-by-block.csv", int8_blocks.COLUMNS)
        print("appended to results/int8-by-block.csv", file=sys.stderr)
    return 0


def _bench_cortex_m4() -> int:
    from kerasnets.tools import cortex_m

    if FLAGS.mode != "int8":
        raise app.UsageError("bench --target cortex-m4 runs full-integer models: --mode int8")
    row = cortex_m.cortex_m4_row(_bench_model_bytes(), tflm_tree=FLAGS.tflm_tree, kernels=FLAGS.kernels,
                                 clock_mhz=FLAGS.clock_mhz)
    print(json.dumps(row))
    return 0 if row["bit_exact"] else 1


def _bench_ethos_u() -> int:
    from kerasnets.tools import ethos_u

    if FLAGS.mode != "int8":
        raise app.UsageError(f"bench --target {FLAGS.target} compiles full-integer models: --mode int8")
    print(json.dumps(ethos_u.ethos_u_row(_bench_model_bytes(), target=FLAGS.target)))
    return 0


def _bench_model_bytes():
    """(name, .tflite bytes) from --tflite or a registry --model exported in --mode (untrained
    weights with BatchNorm statistics from the calibration images, so int8 ranges are real)."""
    from kerasnets.pipelines import tflite_file

    if bool(FLAGS.tflite) == bool(FLAGS.model):
        raise app.UsageError(f"bench --target {FLAGS.target} needs exactly one of --tflite FILE or --model NAME")
    if FLAGS.tflite:
        data, _ = tflite_file.read_tflite_file(FLAGS.tflite)
        return os.path.splitext(os.path.basename(FLAGS.tflite))[0], data
    from kerasnets.pipelines import convert

    model, images = _calibrated_model()
    return FLAGS.model, convert.export(model, FLAGS.mode, images)


def _calibrated_model():
    """(registry --model at --input_size, its calibration images): untrained weights with BatchNorm
    statistics from digits, so int8 ranges are real."""
    from kerasnets.pipelines import convert, data, saving

    model = saving.create_at_size(FLAGS.model, FLAGS.input_size)
    images = data.digits_images(model.input_shape[1:], 32)[0]
    convert.calibrate_batchnorm(model, images)
    return model, images


def _run_config():
    from kerasnets.tools import run

    cfg = run.default_config()
    overrides = run.load_config_file(FLAGS.config) if FLAGS.config else {}
    for key in run.flatten(cfg.to_dict()):
        if key in FLAGS and FLAGS[key].present:
            overrides[key] = FLAGS[key].value
    for flag, key in _RUN_SHORTCUTS.items():
        if FLAGS[flag].present:
            overrides[key] = FLAGS[flag].value
    return run.apply_overrides(cfg, overrides)


def _strategy():
    import tensorflow as tf

    if FLAGS.strategy == "mirrored":
        return tf.distribute.MirroredStrategy()
    if FLAGS.strategy == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError("--strategy multiworker needs TF_CONFIG (cluster and task) in the environment")
        return tf.distribute.MultiWorkerMirroredStrategy()
    return None


def _compress() -> int:
    from kerasnets.pipelines import prune
    from kerasnets.tools import compress

    if bool(FLAGS.model) == bool(FLAGS.keras):
        raise app.UsageError("compress needs exactly one of --model NAME or --keras FILE")
    if not FLAGS.method:
        raise app.UsageError(f"compress needs --method (one of {', '.join(prune.METHODS)})")
    if not FLAGS.out or not FLAGS.out.endswith(".keras"):
        raise app.UsageError("compress needs --out FILE.keras")
    summary = compress.run(model=FLAGS.model, keras_file=FLAGS.keras, method=FLAGS.method,
                           ratio=FLAGS.ratio, target=FLAGS.target, dataset=FLAGS.dataset,
                           epochs=FLAGS.epochs or 0, batch_size=FLAGS.batch_size,
                           input_size=FLAGS.input_size, classes=FLAGS.classes,
                           from_scratch=FLAGS.from_scratch, strength=FLAGS.strength, out=FLAGS.out)
    print(json.dumps(summary))
    return 0


def _run() -> int:
    from kerasnets.tools import run

    cfg = _run_config()
    keras_verbose = 1 if sys.stdout.isatty() else 2  # a progress bar on a terminal, one line per epoch in a log
    manifest = run.run_pipeline(cfg, from_stage=FLAGS.from_stage, resume=FLAGS.resume, strategy=_strategy(),
                                verbose=keras_verbose, progress=console.print_stage)
    report = os.path.join(manifest["out_dir"], "report.html")
    if FLAGS.json:
        print(json.dumps(manifest["metrics"]))
        print(f"report: {report}", file=sys.stderr)
    else:
        print(f"\n{cfg.model} on {cfg.data.dataset}\n{console.summary(manifest['metrics'], report)}")
    return 0


def _frontier() -> int:
    from kerasnets.pipelines import data as data_mod, machine
    from kerasnets.tools import frontier

    data = data_mod.in_memory(data_mod.load(FLAGS.dataset, image_shape=(32, 32, 3)))
    rows = frontier.run_frontier(
        data, out=FLAGS.out, work=FLAGS.work, epochs=FLAGS.epochs, recipe=FLAGS.recipe, top=FLAGS.top,
        rank_epochs=FLAGS.rank_epochs, rank_images=FLAGS.rank_images, candidates=FLAGS.candidates,
        reference=FLAGS.reference, teacher=FLAGS.teacher, teacher_epochs=FLAGS.teacher_epochs,
        compressed=FLAGS.compress or (), pre_epochs=FLAGS.pre_epochs,
        device=machine.machine_name(), command=" ".join(["kerasnets", *sys.argv[1:]]),
        progress=lambda message: console.print_stage("frontier", message))
    print(f"{len(rows)} rows added to {FLAGS.out}")
    return 0


# ---------------------------------------------------------------------------------------------
# subcommands, help and error messages


@dataclasses.dataclass(frozen=True)
class Command:
    """A subcommand: what it does, its flags, its body, and the library arguments whose flag has
    another name (every other argument named like one of its flags becomes that flag)."""
    summary: str
    define: Callable
    main: Callable[[], int]
    renames: dict = dataclasses.field(default_factory=dict)


COMMANDS = {
    "run": Command("the whole pipeline: data, train, compress, QAT, export, micro, bench, report",
                   _run_flags, _run,
                   {"spec": "dataset", "data": "dataset", "config_file": "config", "seed": "data.seed",
                    "test_fraction": "data.test_fraction", "warmup_epochs": "train.warmup_epochs",
                    "method": "compress.method", "ratio": "compress.ratio", "target": "compress.target",
                    "strength": "compress.strength", "mode": "export.modes", "max_arena": "micro.max_arena"}),
    "zoo": Command("build, profile, export and time registry models into a CSV table", _zoo_flags, _zoo,
                   {"pattern": "filter"}),
    "profile": Command("parameters, MACs and activation memory of a registry model, per layer",
                       _profile_flags, _profile),
    "export": Command("a model to .tflite (and TFLite Micro sources) after the parity gates",
                      _export_flags, _export,
                      {"keras_file": "keras", "saved_model_dir": "saved_model", "spec": "calibration",
                       "golden_inputs": "calibration"}),
    "bench": Command("latency and memory of a .tflite model on this machine, an Android phone or an "
                     "emulated Cortex-M4",
                     _bench_flags, _bench,
                     {"activity": "apk_activity", "tflite_files": "tflite", "workspace": "stage_apk"}),
    "compress": Command("prune (and fine-tune) a model to a ratio or a budget", _compress_flags, _compress,
                        {"keras_file": "keras", "spec": "dataset", "data": "dataset"}),
    "frontier": Command("models fitted to ResNet-8's int8 size and arena, ranked, trained and measured "
                        "on CIFAR-10", _frontier_flags, _frontier, {"spec": "dataset"}),
}
SUBCOMMANDS = tuple(COMMANDS)
USAGE = f"usage: kerasnets {{{','.join(SUBCOMMANDS)}}} [flags]   (kerasnets <subcommand> --help)"
_ARGUMENT = re.compile(r"`([A-Za-z_][\w.]*)(=[^`]*)?`")


def flag_names(command: str) -> dict:
    """Library argument name -> flag name, for the arguments `command` has a flag for."""
    own = {flag.name: flag.name for flag in FLAGS.get_flags_for_module(f"kerasnets {command}")}
    return {**own, **COMMANDS[command].renames}


def translate(message: str, names: dict) -> str:
    """A library message in command-line words: `name` -> --flag, `name=value` -> --flag=value for
    every name in `names`; other backquoted names are left as they are."""
    def flag(match):
        name, value = match.group(1), match.group(2) or ""
        return f"--{names[name]}{value}" if name in names else match.group(0)

    return _ARGUMENT.sub(flag, message)


def usage() -> str:
    lines = [USAGE, ""] + [f"  {name:<9}{command.summary}" for name, command in COMMANDS.items()]
    return "\n".join(lines)


def command_help(command: str) -> str:
    """`kerasnets <command> --help`: what it does and its own flags with their help."""
    return (f"usage: kerasnets {command} [flags]\n\n{COMMANDS[command].summary}\n\n"
            + FLAGS.module_help(f"kerasnets {command}").lstrip("\n"))


def main(argv):
    if len(argv) < 2 or argv[1] not in COMMANDS:
        raise app.UsageError(f"{USAGE}; got {argv[1:2] or 'no subcommand'}")
    if len(argv) > 2:
        raise app.UsageError(f"unexpected arguments {argv[2:]}; flags take the form --name=value")
    console.set_absl_verbosity(FLAGS.verbose)
    try:
        return COMMANDS[argv[1]].main()
    except ValueError as error:
        print(f"kerasnets {argv[1]}: {translate(str(error), flag_names(argv[1]))}", file=sys.stderr)
        return 2
    except RuntimeError as error:  # TFLite Micro crashed in its child process: say so, no traceback
        arena = sys.modules.get("kerasnets.micro.arena")
        if arena is None or not isinstance(error, arena.MicroCrash):
            raise
        print(f"kerasnets {argv[1]}: {translate(str(error), flag_names(argv[1]))}", file=sys.stderr)
        return 1


def _dashes_to_underscores(argv):
    """Accept --input-size as well as --input_size."""
    out = []
    for arg in argv:
        if arg.startswith("--") and "-" in arg.split("=", 1)[0][2:]:
            name, sep, value = arg[2:].partition("=")
            arg = "--" + name.replace("-", "_") + sep + value
        out.append(arg)
    return out


_HELP = ("--help", "-h", "-?", "--helpshort")


def run():
    """Entry point: defines only the named subcommand's flags, answers --help, then runs it; quiet
    (TensorFlow's log levels set before it loads, its native output captured) unless --verbose."""
    argv = _dashes_to_underscores(sys.argv)
    verbose = console.verbose_requested(argv)
    console.set_log_levels(verbose)
    with console.quiet_native_stderr(not verbose):
        _define_and_run(argv)


def _define_and_run(argv):
    command = argv[1] if len(argv) > 1 and argv[1] in COMMANDS else None
    if command:
        COMMANDS[command].define(_Definer(command))
        _common_flags(_Definer(command))
    if any(arg in _HELP for arg in argv[1:]):
        print(command_help(command) if command else usage())
        sys.exit(0)
    app.run(main, argv=argv)


if __name__ == "__main__":
    run()
