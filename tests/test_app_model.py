"""App models: the Android Task Library's ImageClassifier (tflite-support 0.4.4, in its own
virtualenv because it pins protobuf < 4) takes what kerasnets writes for apps and classifies real
images as LiteRT does, a grayscale model included."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kerasnets.pipelines import app_model, convert, data as data_mod, metadata, train
from kerasnets.tools import bench_child

REPO = Path(__file__).resolve().parents[1]
TASK_PYTHON = Path(os.environ.get("KERASNETS_TFLITE_SUPPORT_PYTHON",
                                  REPO / ".venv-tflite-support" / "bin" / "python"))
CHILD = Path(__file__).with_name("task_library_child.py")
IMAGES = 48


@pytest.fixture(scope="module")
def digits_classifier(tmp_path_factory):
    """resnet8 trained briefly on the bundled digits, grayscale 16x16; its held-out images as RGB
    pixels and their labels."""
    data = data_mod.load("digits", image_shape=(16, 16, 1))
    result = train.fit(lambda: __import__("kerasnets").create_model("resnet8", input_shape=(16, 16, 1), classes=10),
                       data, str(tmp_path_factory.mktemp("train")),
                       config={"epochs": 4, "batch_size": 32, "lr": 0.05, "augment": []}, verbose=0)
    images, labels = zip(*data.test.take(IMAGES).as_numpy_iterator())
    pixels = np.round((np.stack(images) + 1.0) * 127.5).astype(np.uint8)
    info = metadata.ImageClassifierInfo(name="resnet8", labels=tuple(f"digit {c}" for c in data.classes))
    return result["model"], data_mod.representative_images(data, 100), app_model.as_rgb(pixels), \
        np.array(labels).argmax(-1) if np.ndim(labels[0]) else np.array(labels), info


def task_library_scores(tflite: bytes, pixels: np.ndarray, tmp_path) -> list[dict]:
    if not TASK_PYTHON.exists():
        pytest.fail(f"no tflite-support virtualenv at {TASK_PYTHON}: run scripts/bootstrap.sh --test")
    model, images = tmp_path / "app.tflite", tmp_path / "images.npy"
    model.write_bytes(tflite)
    np.save(images, pixels)
    result = subprocess.run([str(TASK_PYTHON), str(CHILD), str(model), str(images)], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def litert_scores(tflite: bytes, pixels: np.ndarray, labels) -> list[dict]:
    """What LiteRT gives for the pixels normalised as the metadata says (raw for a uint8 input)."""
    interpreter = convert.litert_interpreter(tflite)
    details, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    x = pixels if details["dtype"] == np.uint8 else (pixels.astype(np.float32) - 127.5) / 127.5
    scores = []
    for image in x:
        y = convert.run_litert(tflite, image[None])[0]
        if np.dtype(out["dtype"]).kind != "f":
            y = convert.dequantize_output(y, out)
        scores.append(dict(zip(labels, y.tolist())))
    return scores


@pytest.mark.parametrize("io_type", app_model.IO_TYPES)
def test_task_library_classifies_real_images_like_litert(digits_classifier, io_type, tmp_path):
    model, calibration, pixels, truth, info = digits_classifier
    tflite = app_model.app_tflite(model, calibration, info, io_type)
    interpreter = convert.litert_interpreter(tflite)
    assert tuple(interpreter.get_input_details()[0]["shape"]) == (1, 16, 16, 3)  # RGB, from a gray model
    assert interpreter.get_input_details()[0]["dtype"] == (np.uint8 if io_type == "uint8" else np.float32)
    assert bench_child.ops_outside_xnnpack(interpreter) == ""  # the int8 softmax runs as a float island
    got = task_library_scores(tflite, pixels, tmp_path)
    expected = litert_scores(tflite, pixels, info.labels)
    assert len(got) == len(expected) == IMAGES
    top = [max(scores, key=scores.get) for scores in got]
    same_top = np.mean([t == max(scores, key=scores.get) for t, scores in zip(top, expected)])
    assert all(set(g) == set(info.labels) for g in got)
    if io_type == "uint8":
        # both runtimes run the same integers: same labels, scores within 2 output steps (1/256 each)
        assert same_top == 1.0
        for g, e in zip(got, expected):
            np.testing.assert_allclose([g[k] for k in info.labels], [e[k] for k in info.labels], atol=2 / 256)
    else:
        # float: (pixel - 127.5) / 127.5 lands every pixel on a rounding tie of the int8 input
        # step, which tflite-support's older TFLite rounds the other way, so near-equal scores
        # may swap; the runtimes must still agree on nearly every image
        assert same_top >= 0.95, same_top
    # the raw pixels an app passes are read as the trained model's input: it classifies the digits
    accuracy = np.mean([t == f"digit {c}" for t, c in zip(top, truth)])
    keras_accuracy = np.mean(model.predict((pixels[..., :1] / 127.5 - 1.0), verbose=0).argmax(-1) == truth)
    assert keras_accuracy >= 0.8 and accuracy >= keras_accuracy - 0.05, (accuracy, keras_accuracy)


def test_a_uint8_input_reads_raw_pixels(digits_classifier):
    model, calibration, _, _, info = digits_classifier
    # dim calibration images span half the input range: the converter's own uint8 scale would be
    # 1/255, and an app's raw pixel would be read as twice as bright
    tflite = app_model.app_tflite(model, calibration * 0.5, info, "uint8")
    scale, zero_point = convert.litert_interpreter(tflite).get_input_details()[0]["quantization"]
    assert (scale, zero_point) == (pytest.approx(1 / 127.5), 128)  # pixel p is (p - 128) / 127.5
    assert metadata.read(tflite)["color_space"] == "RGB"


def test_the_gray_model_behind_rgb_is_the_same_model(digits_classifier):
    model, calibration, *_ = digits_classifier
    rgb = app_model.rgb_model(model)
    np.testing.assert_allclose(rgb(app_model.as_rgb(calibration[:8])).numpy(), model(calibration[:8]).numpy(),
                               atol=1e-5)


def test_bad_app_settings_are_refused(digits_classifier):
    model, calibration, _, _, info = digits_classifier
    with pytest.raises(ValueError, match=r"`io_type` must be one of \('uint8', 'float'\).*refuse int8"):
        app_model.app_tflite(model, calibration, info, "int8")
    import dataclasses
    with pytest.raises(ValueError, match="same for every channel"):
        app_model.app_tflite(model, calibration,
                             dataclasses.replace(info, mean=(1.0, 2.0, 3.0), std=(1.0, 1.0, 1.0)), "uint8")


def test_the_app_copy_is_lowered_for_the_cpu_it_names():
    """4-channel 1x1 convolutions at 16x16: packed along the width for a CPU with int8 dot products
    (the default), left as they are for one without (pipelines.xnnpack, rewrite 3)."""
    import tf_keras as keras

    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 1, activation="relu")(keras.layers.Conv2D(4, 1, activation="relu")(inputs))
    model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(keras.layers.GlobalAveragePooling2D()(x)))
    calibration = np.random.default_rng(0).uniform(-1, 1, (16, 16, 16, 3)).astype("float32")
    info = metadata.ImageClassifierInfo(name="narrow", labels=tuple(f"class {c}" for c in range(10)))

    def reshapes(**cpu):
        from kerasnets.pipelines import tflite_file

        graph = tflite_file.read_tflite(app_model.app_tflite(model, calibration, info, **cpu))
        return [op.name for op in graph.ops].count("RESHAPE")

    assert reshapes() > reshapes(int8_dot_product=False) == 0
