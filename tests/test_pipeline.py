"""`kerasnets run` end to end on real data: stages, manifest, skip on re-run, restart from a
stage, config files and validation, image folders in grayscale and colour."""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from kerasnets.tools import run

METRICS = ("top1_fp32", "top1_int8", "int8_kb", "arena_bytes", "latency_ms", "params", "macs")
QUICK = ["--model=resnet8", "--input_size=16", "--epochs=1", "--batch_size=32", "--bench.runs=3",
         "--export.calibration_images=20"]


def kerasnets(*args, cwd=None):
    return subprocess.run([sys.executable, "-c", "from kerasnets.tools.cli import run; run()", *args],
                          capture_output=True, text=True, timeout=1200, cwd=cwd,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})


def stage_status(stderr, stage):
    """What the run's line for `stage` says: `skipped (unchanged)`, `off` or its time (`2.1 s`)."""
    lines = [line for line in stderr.splitlines() if re.fullmatch(rf"{stage} \.+ .+", line)]
    assert len(lines) == 1, (stage, stderr[-2000:])
    return lines[0].split(" ", 2)[2]


def ran(stderr, stage):
    return re.fullmatch(r"\d+\.\d s", stage_status(stderr, stage)) is not None


SKIPPED = "skipped (unchanged)"


def _stage_seconds(out):
    manifest = json.loads((out / "manifest.json").read_text())
    return {k: v["seconds"] for k, v in manifest["stages"].items()}, manifest


def test_run_on_digits_writes_every_artefact_and_reruns_only_what_changed(tmp_path):
    out = tmp_path / "run"
    first = kerasnets("run", *QUICK, f"--out={out}")
    assert first.returncode == 0, first.stderr[-3000:]
    seconds, manifest = _stage_seconds(out)
    for key in METRICS:
        assert key in manifest["metrics"], key
    # the int8 top-1 is the confusion matrix's diagonal (one epoch may still be near chance)
    confusion = json.loads((out / "export/int8_confusion.json").read_text())
    correct = sum(row[i] for i, row in enumerate(confusion["matrix"]))
    assert manifest["metrics"]["top1_int8"] == round(correct / confusion["images"], 4)
    assert manifest["metrics"]["arena_bytes"] > 1000
    for name in ("report.md", "report.html", "curves.png", "layers.png", "confusion.png", "export/int8_confusion.json",
                 "export/model_int8.tflite", "export/model_app.tflite", "micro/resnet8_model_data.cc",
                 "train/last.keras"):
        assert (out / name).exists(), name
    for stage in ("data", "train", "export", "micro", "bench", "report"):
        assert stage in manifest["stages"]
    artefacts = manifest["stages"]["export"]["artefacts"]
    assert len(artefacts["export/model_int8.tflite"]) == 64  # sha256
    assert manifest["versions"]["tensorflow"] and manifest["machine"]

    again = kerasnets("run", *QUICK, f"--out={out}")
    assert again.returncode == 0, again.stderr[-3000:]
    assert stage_status(again.stderr, "train") == SKIPPED
    assert _stage_seconds(out)[0]["train"] == seconds["train"]

    restart = kerasnets("run", *QUICK, f"--out={out}", "--from_stage=export")
    assert restart.returncode == 0
    assert stage_status(restart.stderr, "train") == SKIPPED and ran(restart.stderr, "export")

    changed = kerasnets("run", *QUICK, f"--out={out}", "--micro.enabled=false")
    assert stage_status(changed.stderr, "export") == SKIPPED and stage_status(changed.stderr, "micro") == "off"

    from kerasnets.pipelines import metadata

    assert metadata.read((out / "export/model_int8.tflite").read_bytes())["labels"] == [str(i) for i in range(10)]
    compressed = kerasnets("run", *QUICK, f"--out={out}", "--compress.method=bn", "--compress.ratio=0.3")
    assert compressed.returncode == 0, compressed.stderr[-3000:]
    assert stage_status(compressed.stderr, "train") == SKIPPED
    assert ran(compressed.stderr, "compress") and ran(compressed.stderr, "export")
    metrics = _stage_seconds(out)[1]["metrics"]
    assert metrics["params_compressed"] < 0.75 * metrics["params"]
    assert metrics["int8_kb"] < manifest["metrics"]["int8_kb"]


def test_run_with_qat_exports_from_the_saved_qat_model(tmp_path):
    """The export stage loads qat/last.keras from disk: a QAT model must survive the .keras format."""
    out = tmp_path / "run"
    result = kerasnets("run", *QUICK, f"--out={out}", "--qat.enabled=true", "--micro.enabled=false")
    assert result.returncode == 0, result.stderr[-3000:]
    _, manifest = _stage_seconds(out)
    # the QAT top-1 is the saved QAT model's own on the run's test split
    from kerasnets.pipelines import data, quantize, saving, train

    digits = data.load("digits", image_shape=(16, 16, 1))
    qat = saving.load_keras(str(out / "qat" / "last.keras"))
    assert manifest["metrics"]["top1_qat"] == round(train.evaluate(qat, digits), 4)
    # its ranges started from calibration images, not TFMOT's [-6, 6], which one short epoch at
    # an EMA decay of 0.999 would have moved only a few percent (a ReLU's minimum stays near -6)
    starts = [low for low, _ in quantize.activation_ranges(qat).values()]
    assert starts and np.median(starts) > -1.0, starts
    assert "qat/last.keras" in manifest["stages"]["qat"]["artefacts"]
    assert (out / "export" / "model_int8.tflite").exists()


def test_config_file_keys_are_validated(tmp_path):
    good = tmp_path / "run.yaml"
    good.write_text("model: resnet8\ntrain:\n  epochs: 2\n  optimizer: adamw\ndata:\n  input_size: 16\n")
    cfg = run.apply_overrides(run.default_config(), run.load_config_file(str(good)))
    assert (cfg.train.epochs, cfg.train.optimizer, cfg.data.input_size) == (2, "adamw", 16)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"train": {"epochz": 3}}))
    result = kerasnets("run", f"--config={bad}")
    assert result.returncode == 2
    assert "unknown config key 'train.epochz'" in result.stderr and "train.epochs" in result.stderr
    cfg = run.apply_overrides(run.default_config(), {"export.app_int8_dot_product": "False", "data.strict": "yes"})
    assert cfg.export.app_int8_dot_product is False and cfg.data.strict is True
    with pytest.raises(ValueError, match="'export.app_int8_dot_product' takes true or false; got 'maybe'"):
        run.apply_overrides(run.default_config(), {"export.app_int8_dot_product": "maybe"})
    unknown_model = kerasnets("run", "--model=resnet_8", f"--out={tmp_path / 'x'}")
    assert unknown_model.returncode == 2 and "did you mean resnet8" in unknown_model.stderr


@pytest.mark.parametrize("channels", [1, 3])
def test_image_folders_in_grayscale_and_colour(tmp_path, channels):
    rng = np.random.default_rng(channels)
    root = tmp_path / "images"
    for split in ("train", "test"):
        for cls in ("a", "b"):
            (root / split / cls).mkdir(parents=True)
            for i in range(8):
                pixels = rng.integers(0, 255, (20, 20, channels), dtype=np.uint8)
                (root / split / cls / f"{i}.png").write_bytes(tf.io.encode_png(pixels).numpy())
    out = tmp_path / "run"
    result = kerasnets("run", *QUICK, f"--dataset=imagefolder:{root}", f"--out={out}", "--micro.enabled=false",
                       "--bench.targets=")
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stages"]["data"]["metrics"]["num_train"] == 16
    profile = json.loads((out / "train" / "profile.json").read_text())
    assert profile["input_shape"] == [16, 16, channels]
