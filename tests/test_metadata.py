"""TFLite classifier metadata: written by kerasnets, read back by MediaPipe's ImageClassifier (an
independent reader, the one Android apps use) and by kerasnets itself."""
import numpy as np
import pytest

import kerasnets
from kerasnets.pipelines import convert, metadata
from conftest import calibrate_batchnorm

LABELS = tuple(f"digit {i}" for i in range(10))


@pytest.fixture(scope="module")
def classifier(digit_batches):
    model = kerasnets.create_model("resnet8", input_shape=(32, 32, 3), classes=10)
    images = digit_batches((32, 32, 3), 16)
    calibrate_batchnorm(model, images)
    return model, images


def _mediapipe_scores(tflite, pixels):
    import mediapipe as mp  # a test dependency: scripts/bootstrap.sh --test installs it
    from mediapipe.tasks.python.core import base_options
    from mediapipe.tasks.python.vision import image_classifier

    options = image_classifier.ImageClassifierOptions(
        base_options=base_options.BaseOptions(model_asset_buffer=tflite), max_results=len(LABELS))
    with image_classifier.ImageClassifier.create_from_options(options) as classifier:
        result = classifier.classify(mp.Image(image_format=mp.ImageFormat.SRGB, data=pixels))
    return {c.category_name: c.score for c in result.classifications[0].categories}


@pytest.mark.parametrize("mode, io_type", [("fp32", "int8"), ("int8", "uint8")])
def test_mediapipe_reads_labels_and_normalisation(classifier, mode, io_type):
    model, images = classifier
    plain = convert.export(model, mode, images, io_type=io_type)
    tflite = metadata.attach(plain, metadata.ImageClassifierInfo(name="resnet8", labels=LABELS))
    pixels = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    scores = _mediapipe_scores(tflite, pixels)
    assert set(scores) == set(LABELS)
    # The same image normalised as the metadata says, through LiteRT: MediaPipe must agree.
    x = (pixels[None].astype(np.float32) - 127.5) / 127.5
    details = convert.litert_interpreter(plain).get_input_details()[0]
    if mode == "int8":
        x = convert.quantize_input(x, details)
    out = convert.run_litert(plain, x)[0]
    if mode == "int8":
        out = convert.dequantize_output(out, convert.litert_interpreter(plain).get_output_details()[0])
    expected = dict(zip(LABELS, out.tolist()))
    for label, score in scores.items():
        assert score == pytest.approx(expected[label], abs=2e-2 if mode == "int8" else 1e-4)


def test_round_trip_strip_and_unchanged_outputs(classifier):
    model, images = classifier
    plain = convert.to_int8(model, images)
    info = metadata.ImageClassifierInfo(name="resnet8", labels=LABELS, mean=(0.0,), std=(255.0,),
                                        description="digits classifier", version="3", license="MIT")
    tflite = metadata.attach(plain, info)
    read = metadata.read(tflite)
    assert read["labels"] == list(LABELS) and read["mean"] == (0.0,) and read["std"] == (255.0,)
    assert (read["name"], read["description"], read["version"], read["license"]) == \
        ("resnet8", "digits classifier", "3", "MIT")
    assert read["color_space"] == "RGB" and read["label_files"] == ["labels.txt"]
    x8 = convert.quantize_input(images, convert.litert_interpreter(plain).get_input_details()[0])
    np.testing.assert_array_equal(convert.run_litert(tflite, x8, reference=True),
                                  convert.run_litert(plain, x8, reference=True))
    again = metadata.attach(tflite, info)  # re-attaching replaces, never stacks
    assert metadata.read(again) == read and len(again) == len(tflite)
    stripped = metadata.strip(tflite)
    assert metadata.read(stripped) is None and metadata.read(plain) is None
    np.testing.assert_array_equal(convert.run_litert(stripped, x8, reference=True),
                                  convert.run_litert(plain, x8, reference=True))


def test_bad_metadata_is_refused(classifier):
    model, images = classifier
    plain = convert.to_int8(model, images)
    with pytest.raises(ValueError, match="3 labels for a model with 10 outputs"):
        metadata.attach(plain, metadata.ImageClassifierInfo(name="x", labels=("a", "b", "c")))
    with pytest.raises(ValueError, match="1 or 3 values"):
        metadata.attach(plain, metadata.ImageClassifierInfo(name="x", labels=LABELS, mean=(1.0, 2.0)))
    with pytest.raises(ValueError, match="corrupt or truncated"):
        metadata.attach(plain[:100], metadata.ImageClassifierInfo(name="x", labels=LABELS))
