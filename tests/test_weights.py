"""Shipped trained weights: create_model(name, weights="cifar10") and its integrity checks."""
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import kerasnets
from kerasnets import weights

SHIPPED = weights.available()
CIFAR10_TEST = "/work/shared/data/cifar10-jpeg/cifar10-jpeg.tar.gz"
BUNDLES = Path(__file__).resolve().parents[1] / "results" / "bundles"


def test_the_reference_and_the_frontier_winners_ship_weights():
    assert "resnet8" in SHIPPED
    assert len(SHIPPED) >= 2, SHIPPED


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_weights_reproduce_their_recorded_outputs(name):
    item = weights.entry(name, "cifar10")
    model = kerasnets.create_model(name, weights="cifar10")
    assert model.input_shape[1:] == tuple(item["input_shape"]) and model.output_shape[-1] == 10
    outputs = model.predict_on_batch(weights.check_input(model.input_shape[1:]))
    np.testing.assert_allclose(outputs, item["check_outputs"], atol=1e-4)
    # an untrained model of the same architecture gives other outputs: the check can fail
    fresh = kerasnets.create_model(name, input_shape=model.input_shape[1:], classes=10)
    assert np.abs(fresh.predict_on_batch(weights.check_input(model.input_shape[1:])) - outputs).max() > 1e-2


@pytest.mark.skipif(not os.path.exists(CIFAR10_TEST), reason="needs the CIFAR-10 (JPEG) archive")
@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_weights_classify_real_cifar10_images(name):
    from kerasnets.pipelines import data

    item = weights.entry(name, "cifar10")
    model = kerasnets.create_model(name, weights="cifar10")
    test = data.load(f"imagefolder:{CIFAR10_TEST}", image_shape=tuple(item["input_shape"])).test.take(500)
    images, labels = map(np.stack, zip(*test.as_numpy_iterator()))
    top1 = np.mean(np.argmax(model.predict(images, verbose=0), -1) == labels)
    # 500 images: the full-test-set figure within 4 standard errors of a binomial proportion
    spread = 4 * np.sqrt(item["top1_fp32"] * (1 - item["top1_fp32"]) / 500)
    assert abs(top1 - item["top1_fp32"]) < spread, (top1, item["top1_fp32"])


def test_a_model_without_weights_names_the_models_that_have_them():
    with pytest.raises(ValueError, match="no shipped weights for 'resnet20_cifar'.*resnet8 \\(cifar10\\)"):
        kerasnets.create_model("resnet20_cifar", weights="cifar10")


def test_an_unknown_dataset_names_the_ones_there_are():
    with pytest.raises(ValueError, match="resnet8 has no 'imagenet' weights.*'cifar10'"):
        kerasnets.create_model("resnet8", weights="imagenet")


def test_other_classes_are_refused_with_the_fix():
    with pytest.raises(ValueError, match="have 10 classes, got classes=5; pass classes=10 or include_top=False"):
        kerasnets.create_model("resnet8", weights="cifar10", classes=5)


def test_the_backbone_loads_without_the_classifier():
    backbone = kerasnets.create_model("resnet8", weights="cifar10", include_top=False, pooling="avg")
    full = kerasnets.create_model("resnet8", weights="cifar10")
    np.testing.assert_array_equal(backbone.get_layer("stem_conv").get_weights()[0],
                                  full.get_layer("stem_conv").get_weights()[0])


@pytest.fixture
def copied_weights(tmp_path, monkeypatch):
    folder = tmp_path / "pretrained"
    shutil.copytree(weights.WEIGHTS_DIR, folder)
    monkeypatch.setattr(weights, "WEIGHTS_DIR", str(folder))
    monkeypatch.setattr(weights, "INDEX", str(folder / "WEIGHTS.json"))
    return folder / weights.entry("resnet8", "cifar10")["file"]


def test_a_corrupt_file_is_refused_before_loading(copied_weights):
    payload = bytearray(copied_weights.read_bytes())
    payload[len(payload) // 2] ^= 0xFF
    copied_weights.write_bytes(bytes(payload))
    with pytest.raises(ValueError, match="weights file of resnet8 is corrupt.*reinstall kerasnets"):
        kerasnets.create_model("resnet8", weights="cifar10")


def test_a_missing_file_is_named(copied_weights):
    copied_weights.unlink()
    with pytest.raises(ValueError, match="are listed but .*resnet8-cifar10.h5 is missing"):
        kerasnets.create_model("resnet8", weights="cifar10")


def test_weights_of_another_architecture_are_refused(copied_weights, tmp_path):
    other = kerasnets.create_model("resnet20_cifar")
    weights.save(other, "resnet8", "cifar10", metrics={}, folder=str(copied_weights.parent))
    with pytest.raises(ValueError, match="do not fit this model|has no weights for layers"):
        kerasnets.create_model("resnet8", weights="cifar10")


@pytest.mark.parametrize("name", SHIPPED)
def test_each_shipped_model_has_a_tflite_micro_bundle_whose_golden_pairs_hold(name):
    from kerasnets.micro import arena

    bundle = BUNDLES / f"{name}-cifar10"
    for source in ("model_data.h", "model_data.cc", "op_resolver.h", "model_settings.h", "golden.h"):
        assert (bundle / f"{name}_{source}").is_file(), source
    tflite = (bundle / f"{name}.tflite").read_bytes()
    assert f"_model_data_size = {len(tflite)};" in (bundle / f"{name}_model_data.cc").read_text()
    golden = np.load(bundle / "golden.npz")
    outputs = arena.run_micro(tflite, golden["inputs"]).reshape(len(golden["inputs"]), -1)
    np.testing.assert_array_equal(outputs, golden["outputs"])
    # pairs from real images whose outputs depend on the input, classified as their true class
    assert len(golden["outputs"]) >= 2 and not np.array_equal(golden["outputs"][0], golden["outputs"][1])
    assert (np.argmax(golden["outputs"], -1) == golden["labels"]).all(), golden["labels"]
