"""`kerasnets run` is quiet by default (no TensorFlow logs, one line per stage, a summary at the end)
and `--verbose` brings TensorFlow's logs back."""
import json
import os
import re
import subprocess
import sys

from kerasnets.tools import console, run

SMALL = ["--model=resnet8", "--input_size=16", "--epochs=1", "--batch_size=64", "--bench.runs=3",
         "--export.calibration_images=20"]
TF_LOGS = [r"^[IWEF]\d{4} ", r"oneDNN", r"cpu_feature_guard", r"Estimated count of arithmetic ops",
           r"Assets written to", r"cuInit"]


def kerasnets(*args):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run([sys.executable, "-c", "from kerasnets.tools.cli import run; run()", *args],
                          capture_output=True, text=True, timeout=600, env=env)


def tf_log_lines(text):
    return [line for line in text.splitlines() if any(re.search(p, line) for p in TF_LOGS)]


def test_run_is_quiet_and_ends_with_the_summary(tmp_path):
    result = kerasnets("run", *SMALL, f"--out={tmp_path / 'run'}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert tf_log_lines(result.stdout + result.stderr) == []
    stage_lines = [line for line in result.stderr.splitlines() if re.match(r"[a-z]+ \.+ ", line)]
    assert [line.split()[0] for line in stage_lines] == list(run.STAGES)
    assert all(re.fullmatch(r"[a-z]+ \.+ (\d+\.\d s|off)", line) for line in stage_lines), stage_lines
    assert len(re.findall(r"^\d+/\d+ - \d+s - loss: ", result.stdout, re.M)) == 1  # one line for the epoch
    assert not re.search(r"\d+/\d+ \[[=>.]+\]", result.stdout), "per-batch progress in a log"
    tail = result.stdout.rstrip().splitlines()[-6:]
    rows = dict(re.split(r"\s{2,}", line.strip(), maxsplit=1) for line in tail)
    # the summary shows the figures the run recorded in its manifest, in the units they were computed in
    metrics = json.loads((tmp_path / "run" / "manifest.json").read_text())["metrics"]
    for label, key in (("top-1 fp32", "top1_fp32"), ("top-1 int8", "top1_int8")):
        assert rows[label] == f"{100 * metrics[key]:.1f}%", rows
    assert rows["int8 size"] == f"{metrics['int8_kb']:.1f} KiB"
    assert rows["TFLM arena"] == f"{metrics['arena_bytes'] / 1024:.1f} KiB ({metrics['arena_bytes']} bytes)"
    assert rows["host latency"].startswith(f"{metrics['latency_ms']:.3f} ms median")
    assert rows["report"] == str(tmp_path / "run" / "report.html")


def test_verbose_shows_tensorflows_logs(tmp_path):
    result = kerasnets("run", *SMALL, "--verbose", "--micro.enabled=false", "--bench.targets=",
                       f"--out={tmp_path / 'run'}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(tf_log_lines(result.stderr)) > 0


def test_json_ends_with_the_metrics_line(tmp_path):
    import json

    out = tmp_path / "run"
    assert kerasnets("run", *SMALL, f"--out={out}", "--micro.enabled=false").returncode == 0
    again = kerasnets("run", *SMALL, f"--out={out}", "--micro.enabled=false", "--json")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "train ....... skipped (unchanged)" in again.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert json.loads(again.stdout.splitlines()[-1])["top1_int8"] == manifest["metrics"]["top1_int8"]


def test_summary_labels_sizes_in_the_unit_they_are_computed_in():
    """int8_kb and the arena are bytes / 1024: KiB, not kB (1000 bytes)."""
    rows = dict(console.summary_rows({"top1_int8": 0.9387, "int8_kb": 93.9, "arena_bytes": 55952}, "r.html"))
    assert rows == {"top-1 int8": "93.9%", "int8 size": "93.9 KiB", "TFLM arena": "54.6 KiB (55952 bytes)",
                    "report": "r.html"}


def test_quiet_drops_keras_timing_warnings_and_verbose_keeps_them(caplog):
    import logging

    message = ("Callback method `on_train_batch_end` is slow compared to the batch time (batch time: 0.0326s "
               "vs `on_train_batch_end` time: 0.0401s). Check your callbacks.")
    tf_logger = logging.getLogger("tensorflow")
    level, filters = tf_logger.level, list(tf_logger.filters)
    try:
        for verbose, shown in ((False, False), (True, True)):
            console.set_log_levels(verbose)
            caplog.clear()
            with caplog.at_level(logging.WARNING, logger="tensorflow"):
                tf_logger.warning(message)
                tf_logger.warning("a warning about the model")  # anything else still shows
            assert [r.getMessage() for r in caplog.records] == [message] * shown + ["a warning about the model"]
    finally:  # as it was: other tests in this process
        tf_logger.setLevel(level)
        tf_logger.filters[:] = filters
