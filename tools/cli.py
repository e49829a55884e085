"""The `kerasnets` command line (absl): `kerasnets run | zoo | profile | export | bench | compress`."""
from __future__ import annotations

import csv
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("filter", "*", "zoo: wildcard over model names, e.g. 'ghostnet_*'.")
flags.DEFINE_integer("input_size", None, "Square input size instead of each model's default.", lower_bound=1)
flags.DEFINE_integer("runs", 30, "zoo/bench: timed runs per model (the median is reported).", lower_bound=1)
flags.DEFINE_string("out", None, "zoo: CSV file (default results/zoo.csv); export: output folder.")
flags.DEFINE_string("model", None, "profile: registered model name.")
flags.DEFINE_integer("classes", None, "profile: number of classes (default: the model's).", lower_bound=1)
flags.DEFINE_bool("json", False, "profile: print the full profile as JSON.")
flags.DEFINE_bool("csv", False, "profile: print the per-layer table as CSV.")
flags.DEFINE_string("keras", None, "export: a .keras model file (float or QAT) instead of --model.")
flags.DEFINE_string("saved_model", None, "export: a SavedModel folder instead of --model.")
flags.DEFINE_enum("mode", "int8", ["fp32", "fp16", "dynamic", "int8", "int16x8"], "export: TFLite mode.")
flags.DEFINE_enum("io_type", "int8", ["int8", "uint8"], "export: input/output type of --mode int8.")
flags.DEFINE_bool("micro", False, "export: also write TFLite Micro sources to OUT/micro/.")
flags.DEFINE_string("calibration", "digits", "export: data set for int8 calibration and the parity "
                    "gates (digits, imagefolder:PATH, npz:PATH, cifar10, ...).")
flags.DEFINE_string("labels", None, "export: text file with one class label per line.")
flags.DEFINE_string("target", None, "bench: where to run, host (default) or android; compress: a "
                    "budget KEY=VALUE instead of --ratio (params=50k, macs=20M, int8_kb=40, "
                    "peak_ram=64kB).")
flags.DEFINE_string("tflite", None, "bench: a .tflite file instead of --model.")
flags.DEFINE_integer("threads", 1, "bench: interpreter threads (host).", lower_bound=1)
flags.DEFINE_bool("xnnpack", True, "bench: use LiteRT's default XNNPACK delegate (host).")
flags.DEFINE_bool("record", False, "bench: append the row to results/bench-<target>-<machine>.csv.")
flags.DEFINE_string("parse", None, "bench --target android: parse a saved benchmark_model log.")
flags.DEFINE_string("adb", None, "bench --target android: adb binary (default: adb on PATH).")
flags.DEFINE_string("serial", None, "bench --target android: device serial (adb -s).")
flags.DEFINE_string("benchmark_binary", None, "bench --target android: TFLite benchmark_model binary "
                    "built for the phone (bazel build -c opt --config=android_arm64 "
                    "//tensorflow/lite/tools/benchmark:benchmark_model).")
flags.DEFINE_string("apk", None, "bench --target android: benchmark APK to install and run instead of "
                    "--benchmark_binary (the kerasnets APK, or TFLite's with --apk_activity).")
flags.DEFINE_string("apk_activity", None, "bench --target android: activity of --apk (default the "
                    "kerasnets APK's; TFLite's: org.tensorflow.lite.benchmark/.BenchmarkModelActivity).")
flags.DEFINE_string("stage_apk", None, "bench --target android: TensorFlow checkout to stage the kerasnets "
                    "benchmark APK package into, with the --tflite models (comma-separated) packaged.")
flags.DEFINE_string("config", None, "run: YAML or JSON file of run config keys.")
flags.DEFINE_enum("from_stage", None, ["data", "train", "qat", "export", "micro", "bench", "report"],
                  "run: re-run this stage and every later one.")
flags.DEFINE_bool("resume", False, "run: continue an interrupted training from its last epoch.")
flags.DEFINE_enum("strategy", "default", ["default", "mirrored", "multiworker"],
                  "run: tf.distribute strategy (multiworker reads TF_CONFIG).")
flags.DEFINE_string("dataset", None, "run: digits, cifar10, cifar100, svhn, caltech101, imagefolder:PATH, npz:PATH.")
flags.DEFINE_integer("epochs", None, "run: training epochs.", lower_bound=1)
flags.DEFINE_integer("batch_size", None, "run: training batch size.", lower_bound=1)
flags.DEFINE_integer("channels", None, "run: input channels (default: follow the data).", lower_bound=1)
flags.DEFINE_string("data_dir", None, "run: tensorflow-datasets data folder.")
flags.DEFINE_bool("strict", None, "run: stop on an unreadable image instead of skipping it.")
flags.DEFINE_integer("max_arena", None, "export: refuse a model whose TFLite Micro arena exceeds this "
                     "many bytes.", lower_bound=1)

flags.DEFINE_string("method", None, "compress: magnitude, m_by_n, slimming, bn, qsfm, complexity_pa, "
                    "complexity_fa, complexity_ma, scl or l1.")
flags.DEFINE_float("ratio", None, "compress: fraction in (0, 1) of the prunable channels (structured "
                   "methods) or weights (magnitude, m_by_n) to remove.")
flags.DEFINE_bool("from_scratch", False, "compress: train the pruned architecture from a fresh "
                  "initialisation for --epochs instead of fine-tuning the surviving weights.")
flags.DEFINE_float("strength", None, "compress: sparsity regulariser strength (slimming: L1 on BN "
                   "scales, default 1e-4; scl: connection count, default 0.5).", lower_bound=0)

SUBCOMMANDS = ("run", "zoo", "profile", "export", "bench", "compress")
USAGE = f"usage: kerasnets {{{','.join(SUBCOMMANDS)}}} [flags]   (kerasnets <subcommand> --help)"


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

    if not FLAGS.model:
        raise app.UsageError("profile needs --model NAME (see kerasnets zoo or kerasnets.list_models())")
    shape = None
    if FLAGS.input_size:
        channels = kerasnets.model_info(FLAGS.model).input_shape[2]
        shape = (FLAGS.input_size, FLAGS.input_size, channels)
    stats = kerasnets.profile(kerasnets.create_model(FLAGS.model, input_shape=shape, classes=FLAGS.classes))
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


def _export() -> int:
    import kerasnets
    from kerasnets.tools import export

    sources = [f for f in ("model", "keras", "saved_model") if getattr(FLAGS, f)]
    if len(sources) != 1:
        raise app.UsageError("export needs exactly one of --model NAME, --keras FILE, --saved_model DIR")
    if not FLAGS.out:
        raise app.UsageError("export needs --out DIR")
    if FLAGS.model:
        model, name = kerasnets.create_model(FLAGS.model), FLAGS.model
    elif FLAGS.keras:
        model = export.load_keras(FLAGS.keras)
        name = os.path.splitext(os.path.basename(FLAGS.keras))[0]
    else:
        model = export.load_saved_model(FLAGS.saved_model)
        name = model.name
    summary = export.export_model(
        model, name=name, mode=FLAGS.mode, out_dir=FLAGS.out, calibration=FLAGS.calibration,
        io_type=FLAGS.io_type, micro=FLAGS.micro,
        labels=_read_labels(FLAGS.labels) if FLAGS.labels else None, max_arena=FLAGS.max_arena)
    print(json.dumps(summary))
    return 0


def _bench() -> int:
    from kerasnets.tools import android, bench

    if FLAGS.target not in (None, "host", "android"):
        raise app.UsageError(f"bench --target must be host or android, got {FLAGS.target!r}")
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
                                 "FILE or --apk FILE (or --parse LOGFILE, or --stage_apk TF_DIR)")
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
            bench.append_rows(rows, f"results/bench-android-{bench.slug(rows[0]['device'])}.csv")
        return 0
    row = bench.host_row(_bench_model_bytes(), threads=FLAGS.threads, runs=FLAGS.runs,
                         xnnpack=FLAGS.xnnpack, command=" ".join(["kerasnets"] + sys.argv[1:]))
    print(json.dumps(row))
    if FLAGS.record:
        path = f"results/bench-host-{bench.slug(row['machine'])}.csv"
        bench.append_rows([row], path, bench.COLUMNS)
        print(f"appended to {path}", file=sys.stderr)
    return 0


def _bench_model_bytes():
    """(name, .tflite bytes) from --tflite or a registry --model exported in --mode."""
    from kerasnets.pipelines import tflite_file

    if bool(FLAGS.tflite) == bool(FLAGS.model):
        raise app.UsageError("bench --target host needs exactly one of --tflite FILE or --model NAME")
    if FLAGS.tflite:
        data, _ = tflite_file.read_tflite_file(FLAGS.tflite)
        return os.path.splitext(os.path.basename(FLAGS.tflite))[0], data
    import kerasnets
    from kerasnets.pipelines import convert, data as data_mod

    model = kerasnets.create_model(FLAGS.model)
    images = data_mod.digits_images(model.input_shape[1:], 32)[0]
    return FLAGS.model, convert.export(model, FLAGS.mode, images)


# Shortcut flags of the run command -> run config keys (every key is also a --dotted.key flag).
_RUN_SHORTCUTS = {"model": "model", "dataset": "data.dataset", "input_size": "data.input_size",
                  "channels": "data.channels", "epochs": "train.epochs", "batch_size": "train.batch_size",
                  "out": "out", "data_dir": "data.data_dir", "strict": "data.strict"}


def _define_config_key_flags():
    from kerasnets.pipelines import pipeline

    for key in sorted(pipeline._flatten(pipeline.default_config().to_dict())):
        if key not in FLAGS:
            flags.DEFINE_string(key, None, f"run: config key {key}.")


def _run_config():
    from kerasnets.pipelines import pipeline

    cfg = pipeline.default_config()
    overrides = pipeline.load_config_file(FLAGS.config) if FLAGS.config else {}
    for key in pipeline._flatten(cfg.to_dict()):
        if key in FLAGS and FLAGS[key].present:
            overrides[key] = FLAGS[key].value
    for flag, key in _RUN_SHORTCUTS.items():
        if FLAGS[flag].present:
            overrides[key] = FLAGS[flag].value
    return pipeline.apply_overrides(cfg, overrides)


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
    from kerasnets.tools import compress

    if bool(FLAGS.model) == bool(FLAGS.keras):
        raise app.UsageError("compress needs exactly one of --model NAME or --keras FILE")
    if not FLAGS.method:
        raise app.UsageError("compress needs --method (one of l1, bn, qsfm, slimming, complexity_pa, "
                             "complexity_fa, complexity_ma, scl, magnitude, m_by_n)")
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
    from kerasnets.pipelines import pipeline

    cfg = _run_config()
    manifest = pipeline.run_pipeline(cfg, from_stage=FLAGS.from_stage, resume=FLAGS.resume,
                                     strategy=_strategy())
    print(json.dumps(manifest["metrics"]))
    print(f"report: {os.path.join(manifest['out_dir'], 'report.html')}", file=sys.stderr)
    return 0


def main(argv):
    if len(argv) < 2 or argv[1] not in SUBCOMMANDS:
        raise app.UsageError(f"{USAGE}; got {argv[1:2] or 'no subcommand'}")
    if len(argv) > 2:
        raise app.UsageError(f"unexpected arguments {argv[2:]}; flags take the form --name=value")
    try:
        return {"run": _run, "zoo": _zoo, "profile": _profile, "export": _export,
                "bench": _bench, "compress": _compress}[argv[1]]()
    except ValueError as error:
        print(f"kerasnets {argv[1]}: {error}", file=sys.stderr)
        return 2


def _dashes_to_underscores(argv):
    """Accept --input-size as well as --input_size."""
    out = []
    for arg in argv:
        if arg.startswith("--") and "-" in arg.split("=", 1)[0][2:]:
            name, sep, value = arg[2:].partition("=")
            arg = "--" + name.replace("-", "_") + sep + value
        out.append(arg)
    return out


def run():
    _define_config_key_flags()
    app.run(main, argv=_dashes_to_underscores(sys.argv))


if __name__ == "__main__":
    run()
