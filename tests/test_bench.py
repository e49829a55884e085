"""Benchmarks: the host runner on a real model, the benchmark_model log parser on its real line
formats, and the adb command sequence against a FAKE adb (no phone can exist here)."""
import json
import os
import re
import stat
import subprocess
import sys
import textwrap

import pytest

from kerasnets.tools import android, bench

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Lines in the formats of TFLite's benchmark_model source (native binary: 'INFO: ' prefix).
NATIVE_LOG = """\
INFO: STARTING!
INFO: Graph: [/data/local/tmp/resnet8.tflite]
INFO: The input model file size (MB): 0.0921
INFO: Initialized session in 4.512ms.
INFO: Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
INFO: count=412 first=2032 curr=1120 min=1098 max=2032 avg=1187.42 std=88
INFO: Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
INFO: count=895 first=1130 curr=1104 min=1090 max=1893 avg=1.11678e+03 std=61 p5=1095 median=1107 p95=1202
INFO: Inference timings in us: Init: 4512, First inference: 2032, Warmup (avg): 1187.42, Inference (avg): 1116.78
INFO: Memory footprint delta from the start of the tool (MB): init=2.4375 overall=3.125
INFO: Overall peak memory footprint (MB) via periodic monitoring: 7.90625
"""
# The APK logs the same lines to logcat under tag 'tflite'; older builds omit percentiles and
# memory lines, and identical timings collapse into '(all same)'.
LOGCAT_LOG = """\
11-27 10:00:01.100  4242  4260 I tflite  : Initialized session in 12.5ms.
11-27 10:00:01.200  4242  4260 I tflite  : count=1 curr=2500(all same)
11-27 10:00:02.300  4242  4260 I tflite  : count=50 first=2100 curr=2000 min=1900 max=2400 avg=2.05e+03 std=120
11-27 10:00:02.301  4242  4260 I tflite  : Inference timings in us: Init: 12500, First inference: 2500, Warmup (avg): 2500, Inference (avg): 2050
"""


def test_parser_reads_every_native_line():
    parsed = android.parse_benchmark_log(NATIVE_LOG)
    assert parsed["model_size_mb"] == 0.0921 and parsed["init_ms"] == 4.512
    assert parsed["warmup"]["count"] == 412 and parsed["warmup"]["avg"] == 1187.42
    timed = parsed["inference"]
    assert timed["count"] == 895 and timed["avg"] == pytest.approx(1116.78)
    assert (timed["median"], timed["p95"], timed["p5"]) == (1107, 1202, 1095)
    assert parsed["inference_avg_us"] == 1116.78 and parsed["first_inference_us"] == 2032
    assert parsed["memory_init_mb"] == 2.4375 and parsed["memory_overall_mb"] == 3.125
    assert parsed["peak_memory_mb"] == 7.90625
    row = android.result_row(parsed, model="resnet8", config="xnnpack", threads=4, device="Pixel 7")
    assert row["latency_ms_median"] == 1.107 and row["latency_ms_p95"] == 1.202 and row["runs"] == 895


def test_parser_handles_logcat_all_same_enotation_and_missing_lines():
    parsed = android.parse_benchmark_log(LOGCAT_LOG)
    assert parsed["warmup"] == {"count": 1, "curr": 2500.0, "first": 2500.0, "min": 2500.0,
                                "max": 2500.0, "avg": 2500.0, "std": 0.0}
    assert parsed["inference"]["avg"] == 2050.0 and "median" not in parsed["inference"]
    assert "peak_memory_mb" not in parsed and "memory_overall_mb" not in parsed
    row = android.result_row(parsed, model="m", config="cpu", threads=1, device="d")
    assert row["latency_ms_avg"] == 2.05 and row["latency_ms_median"] is None


def test_parser_rejects_output_without_timings():
    with pytest.raises(ValueError, match="no benchmark_model timings"):
        android.parse_benchmark_log("ERROR: Could not open '/data/local/tmp/x.tflite'.\n")


FAKE_ADB = """\
#!{python}
# FAKE adb for tests (no phone here): records each call, answers like a device would.
import json, sys
args = sys.argv[1:]
with open({log!r}, "a") as f:
    f.write(json.dumps(args) + "\\n")
if args[-1] == "get-state":
    print({state!r})
elif "getprop" in args:
    print("Pixel 7")
elif args[-2:-1] == ["shell"] and "benchmark_model " in args[-1]:
    if "--use_gpu=true" in args[-1]:
        sys.stderr.write("ERROR: GPU delegate unavailable\\n"); sys.exit(1)
    sys.stdout.write({log_text!r})
elif args[-3:] == ["-d", "-s", "tflite:V"]:  # logcat of the last activity start
    with open({log!r}) as f:
        starts = [c for c in map(json.loads, f) if "am start" in c[-1]]
    if "--use_gpu=true" in starts[-1][-1]:
        print("11-27 10:00:03.000  4242  4260 E tflite  : ERROR: Failed to apply GPU delegate.")
        print("11-27 10:00:03.001  4242  4260 E tflite  : Benchmarking failed.")
    else:
        sys.stdout.write({logcat_text!r})
"""


def _fake_adb(tmp_path, state="device"):
    log = tmp_path / "calls.jsonl"
    script = tmp_path / "adb"
    script.write_text(FAKE_ADB.format(python=sys.executable, log=str(log), state=state,
                                      log_text=NATIVE_LOG, logcat_text=LOGCAT_LOG))
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script), log


def test_adb_runner_command_sequence_with_fake_adb(tmp_path):
    adb_path, log = _fake_adb(tmp_path)
    model = tmp_path / "my model.tflite"
    model.write_bytes(b"x")
    binary = tmp_path / "benchmark_model"
    binary.write_bytes(b"x")
    rows = android.run_benchmarks(android.Adb(adb_path, serial="emu-1"), [str(model)], str(binary),
                                  threads=(1, 4), configs=("cpu", "xnnpack", "gpu"), runs=20)
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert all(call[:2] == ["-s", "emu-1"] for call in calls)
    assert calls[0][2:] == ["get-state"]
    assert ["push", str(binary), "/data/local/tmp/benchmark_model"] == calls[2][2:]
    assert ["push", str(model), "/data/local/tmp/my model.tflite"] == calls[4][2:]
    runs = [c[3] for c in calls if c[2] == "shell" and "benchmark_model " in c[3]]
    assert len(runs) == 5  # cpu x2 threads, xnnpack x2, gpu x1
    assert "'--graph=/data/local/tmp/my model.tflite'" in runs[0]  # quoted for the device shell
    assert "--num_threads=4" in runs[1] and "--use_xnnpack=false" in runs[0]
    ok = [r for r in rows if "error" not in r]
    assert len(ok) == 4 and ok[0]["latency_ms_median"] == 1.107 and ok[0]["device"] == "Pixel 7"
    failed = [r for r in rows if "error" in r]
    assert failed[0]["config"] == "gpu" and "GPU delegate unavailable" in failed[0]["error"]


def test_apk_runner_command_sequence_with_fake_adb(tmp_path):
    adb_path, log = _fake_adb(tmp_path)
    apk = tmp_path / "kerasnets_benchmark.apk"
    apk.write_bytes(b"x")
    pushed = tmp_path / "pushed.tflite"
    pushed.write_bytes(b"x")
    rows = android.run_apk_benchmarks(android.Adb(adb_path), ["asset:resnet8.tflite", str(pushed)],
                                      str(apk), threads=(1, 4), configs=("xnnpack", "gpu"), runs=20,
                                      poll=0.01)
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert ["install", "-r", "-d", "-g", str(apk)] in calls
    assert [c for c in calls if c[0] == "push"] == [["push", str(pushed), "/data/local/tmp/pushed.tflite"]]
    starts = [c[1] for c in calls if c[0] == "shell" and c[1].startswith("am start")]
    assert len(starts) == 6  # 2 models x (xnnpack x2 threads + gpu x1)
    # One intent extra carrying every flag, quoted once for the device's shell.
    assert starts[0] == ("am start -S -n com.kerasnets.benchmark/.BenchmarkActivity --es args "
                         "'--graph=asset:resnet8.tflite --num_threads=1 --num_runs=20 "
                         "--report_peak_memory_footprint=true --use_xnnpack=true'")
    assert "--graph=/data/local/tmp/pushed.tflite" in starts[3]
    assert calls.index(["logcat", "-c"]) < calls.index(["shell", starts[0]])
    ok = [r for r in rows if "error" not in r]
    assert [(r["model"], r["threads"]) for r in ok] == [("resnet8", 1), ("resnet8", 4), ("pushed", 1), ("pushed", 4)]
    assert ok[0]["latency_ms_avg"] == 2.05 and ok[0]["init_ms"] == 12.5
    failed = [r for r in rows if "error" in r]
    assert [r["config"] for r in failed] == ["gpu", "gpu"]
    assert "Failed to apply GPU delegate" in failed[0]["error"]
    spaced = tmp_path / "my model.tflite"
    spaced.write_bytes(b"x")
    with pytest.raises(ValueError, match="has a space"):
        android.run_apk_benchmarks(android.Adb(adb_path), [str(spaced)], str(apk))
    with pytest.raises(ValueError, match="APK .*missing.apk does not exist"):
        android.run_apk_benchmarks(android.Adb(adb_path), [str(pushed)], str(tmp_path / "missing.apk"))


def test_apk_sources_agree_with_each_other_and_the_runner():
    """The JNI symbol, Java class, manifest and Bazel target must name the same things, or the APK
    builds but dies with UnsatisfiedLinkError / ActivityNotFoundException on the phone."""
    root = android.APK_SOURCES
    read = lambda *p: open(os.path.join(root, *p), encoding="utf-8").read()  # noqa: E731
    java = read("src", "com", "kerasnets", "benchmark", "BenchmarkActivity.java")
    package = re.search(r"^package ([\w.]+);", java, re.M).group(1)
    cls = re.search(r"public class (\w+) extends Activity", java).group(1)
    native = re.search(r"private static native void (\w+)\(String", java).group(1)
    library = re.search(r'System.loadLibrary\("(\w+)"\)', java).group(1)
    assert f"Java_{package.replace('.', '_')}_{cls}_{native}(" in read("jni", "benchmark_jni.cc")
    build = read("BUILD")
    assert f'name = "lib{library}.so"' in build and f'custom_package = "{package}"' in build
    manifest = read("AndroidManifest.xml")
    assert f'package="{package}"' in manifest and f'android:name="{package}.{cls}"' in manifest
    assert android.APK_ACTIVITY == f"{package}/.{cls}"
    assert "asset:" in java and android.PACKAGED == "asset:"


def test_stage_apk_packages_the_models_into_the_projects_bazel_workspace(tmp_path):
    import shutil

    from kerasnets.pipelines import convert
    import tf_keras as keras

    root = tmp_path / "kerasnets"
    with pytest.raises(ValueError, match="not a kerasnets source tree"):
        android.stage_apk(str(root), [])
    # a source tree as a clone has it: the workspace and the APK package
    shutil.copytree(android.APK_SOURCES, root / "tools/android_apk")
    shutil.copyfile(os.path.join(REPO_ROOT, "WORKSPACE"), root / "WORKSPACE")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    good = tmp_path / "tiny.tflite"
    good.write_bytes(convert.export(model, "fp32"))
    bad = tmp_path / "notes.tflite"
    bad.write_text("not a model")
    with pytest.raises(ValueError, match="notes.tflite"):
        android.stage_apk(str(root), [str(good), str(bad)])
    staged = android.stage_apk(str(root), [str(good)])
    assert staged["target"] == "//tools/android_apk:kerasnets_benchmark"
    assert staged["build"] == "bazel build --config=android_arm64 //tools/android_apk:kerasnets_benchmark"
    assert staged["apk"] == "bazel-bin/tools/android_apk/kerasnets_benchmark.apk"
    assert staged["models"] == ["asset:tiny.tflite"]
    assert (root / "tools/android_apk/assets/models/tiny.tflite").read_bytes() == good.read_bytes()
    other = tmp_path / "other.tflite"
    other.write_bytes(good.read_bytes())
    android.stage_apk(str(root), [str(other)])  # a re-stage replaces the packaged models
    assert sorted(p.name for p in (root / "tools/android_apk/assets/models").iterdir()) == ["other.tflite"]


def test_the_bazel_workspace_pins_the_tensorflow_the_package_is_tested_with():
    """The WORKSPACE's TensorFlow is the installed wheel's commit, and the APK's BUILD reaches
    TensorFlow only through that repository (no label that needs a TensorFlow checkout)."""
    import tensorflow as tf

    workspace = open(os.path.join(REPO_ROOT, "WORKSPACE")).read()
    commit = re.search(r'TENSORFLOW_COMMIT = "([0-9a-f]{40})"', workspace).group(1)
    # the wheel's `git describe`: v2.21.0-rc1-5-g<abbreviated commit>
    abbreviated = tf.version.GIT_VERSION.rsplit("-g", 1)[1]
    assert commit.startswith(abbreviated), (commit, tf.version.GIT_VERSION)
    assert re.search(r'name = "org_tensorflow",\s+sha256 = "[0-9a-f]{64}"', workspace)
    build = open(os.path.join(android.APK_SOURCES, "BUILD")).read()
    labels = re.findall(r'"(@?[\w.-]*//[^"]+)"', build)
    assert labels and all(not label.startswith("//tensorflow") for label in labels), labels
    assert "@org_tensorflow//tensorflow/lite/tools/benchmark:benchmark_tflite_model_lib" in labels
    assert open(os.path.join(REPO_ROOT, ".bazelversion")).read().strip().startswith("7.")


def test_adb_errors_name_the_problem(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("ADB", raising=False)
    with pytest.raises(ValueError, match="adb not found"):
        android.Adb()
    adb_path, _ = _fake_adb(tmp_path, state="unauthorized")
    with pytest.raises(ValueError, match="state is 'unauthorized'"):
        android.Adb(adb_path).require_device()


def _cli(*args):
    return subprocess.run([sys.executable, "-c", "from kerasnets.tools.cli import run; run()", *args],
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})


def test_host_bench_on_a_real_model(tmp_path):
    result = _cli("bench", "--target=host", "--model=resnet8", "--runs=5")
    assert result.returncode == 0, result.stderr
    row = json.loads(result.stdout.strip().splitlines()[-1])
    assert list(row) == bench.COLUMNS
    assert row["mode"] == "int8" and row["input"] == "32x32x3" and row["macs"] == 12501632
    assert row["latency_ms_median"] > 0 and 10 < row["peak_rss_mb"] < 500
    assert row["gmacs_per_s"] > 0 and row["peak_fraction"] > 0


def test_host_rows_name_the_ops_xnnpack_leaves_out_and_count_its_pieces():
    """int8 HARD_SWISH is left to TFLite's kernels by XNNPACK: between two convs it splits the
    graph into two XNNPACK pieces; with ReLU there, the graph is one piece (0 without XNNPACK)."""
    import numpy as np
    import tf_keras as keras

    from kerasnets import layers as knl
    from kerasnets.pipelines import convert

    images = np.random.default_rng(0).uniform(0, 1, (8, 16, 16, 3)).astype("float32")

    def int8_with(activation):
        inputs = keras.Input((16, 16, 3))
        x = activation(keras.layers.Conv2D(8, 3, padding="same")(inputs))
        return convert.export(keras.Model(inputs, keras.layers.Conv2D(8, 1)(x)), "int8", images)

    hswish = bench.host_row(("hswish", int8_with(knl.HardSwish())), runs=2)
    assert hswish["xnnpack_partitions"] == 2 and hswish["ops_outside_xnnpack"] == "HARD_SWISH:1"
    assert hswish["xnnpack_op_share"] == round(1 - 1 / 3, 3)  # of CONV_2D, HARD_SWISH, CONV_2D
    relu = int8_with(keras.layers.ReLU())
    row = bench.host_row(("relu", relu), runs=2)
    assert row["xnnpack_partitions"] == 1 and row["ops_outside_xnnpack"] == "" and row["xnnpack_op_share"] == 1.0
    assert bench.host_row(("relu", relu), runs=2, xnnpack=False)["xnnpack_partitions"] == 0


def test_bench_rejects_bad_files(tmp_path):
    bad = tmp_path / "notes.tflite"
    bad.write_text("not a model")
    result = _cli("bench", "--target=host", f"--tflite={bad}")
    assert result.returncode == 2 and f"{bad} is not a TFLite model" in result.stderr
    log = tmp_path / "empty.log"
    log.write_text("")
    result = _cli("bench", "--target=android", f"--parse={log}")
    assert result.returncode == 2 and "no benchmark_model timings" in result.stderr


def test_recorded_rows_keep_every_column_and_error_text(tmp_path):
    """The header is the table's columns, not the first row's keys: a failed config first must not
    drop the latency columns, and an error row keeps its text."""
    import csv

    path = tmp_path / "bench-android-phone.csv"
    failed = {"model": "m", "config": "gpu", "threads": 4, "device": "phone", "error": "GPU delegate refused"}
    timed = android.result_row(android.parse_benchmark_log(NATIVE_LOG), model="m", config="cpu",
                               threads=1, device="phone")
    bench.append_rows([failed], str(path), android.COLUMNS)
    bench.append_rows([timed], str(path), android.COLUMNS)
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        header, rows = reader.fieldnames, list(reader)
    assert header == android.COLUMNS
    assert rows[0]["error"] == "GPU delegate refused" and rows[0]["latency_ms_avg"] == ""
    assert rows[1]["latency_ms_avg"] == str(timed["latency_ms_avg"]) and rows[1]["error"] == ""


def test_appending_other_columns_rewrites_the_header_instead_of_misaligning(tmp_path):
    import csv

    path = tmp_path / "table.csv"
    bench.append_rows([{"model": "a", "latency_ms": 1.5}], str(path), ["model", "latency_ms"])
    bench.append_rows([{"model": "b", "top1": 0.9, "latency_ms": 2.5}], str(path),
                      ["model", "top1", "latency_ms"])
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows == [{"model": "a", "latency_ms": "1.5", "top1": ""},
                    {"model": "b", "latency_ms": "2.5", "top1": "0.9"}]


def test_load_monitor_samples_while_a_measurement_runs():
    import time

    with bench.LoadMonitor(every=0.01) as load:
        time.sleep(0.1)
    assert len(load.samples) >= 3
    assert load.conditions() == f"load average up to {max(load.samples):.1f} on {os.cpu_count()} cores"
