"""One harness over every registered model: build, serialise, QAT, int8, TFLite Micro, sizes."""
import numpy as np
import pytest
import tf_keras as keras

import kerasnets
from kerasnets.pipelines import convert, quantize
from conftest import (assert_micro_matches_reference, assert_same_outputs, calibrate_batchnorm, int8_outputs,
                      registry_params, CHAIN_HEAVY_VARIANTS, HEAVY_VARIANTS, small_input_shape)

MODELS = kerasnets.list_models()
SIZE_TOLERANCE = 0.05


def _build(name, **kwargs):
    return kerasnets.create_model(name, input_shape=small_input_shape(name), **kwargs)


def test_zoo_is_populated():
    assert len(MODELS) >= 30, MODELS


@pytest.mark.parametrize("heavy", [HEAVY_VARIANTS, CHAIN_HEAVY_VARIANTS])
def test_every_family_keeps_a_variant_in_the_default_run(heavy):
    families = {kerasnets.model_info(n).paper for n in MODELS}
    light = {kerasnets.model_info(n).paper for n in MODELS if n not in heavy}
    assert families == light, families - light
    assert heavy <= set(MODELS), heavy - set(MODELS)


@pytest.mark.parametrize("name", registry_params(MODELS))
def test_builds_with_heads_and_unique_names(name):
    classes = 7
    top = _build(name, classes=classes)
    assert top.name == name
    assert top.output_shape == (None, classes)
    names = [layer.name for layer in top.layers]
    assert len(names) == len(set(names)), "duplicate layer names"
    assert not any(isinstance(layer, keras.layers.Lambda) for layer in top.layers)
    features = _build(name, include_top=False)
    assert len(features.output_shape) == 4
    channels = features.output_shape[-1]
    for pooling in ("avg", "max"):
        pooled = _build(name, include_top=False, pooling=pooling)
        assert pooled.output_shape == (None, channels)


@pytest.mark.parametrize("name", registry_params(MODELS))
def test_config_and_keras_file_roundtrip(name, digit_batches, tmp_path):
    model = _build(name)
    images = digit_batches(model.input_shape[1:], 2)
    calibrate_batchnorm(model, images)
    expected = model(images, training=False)
    rebuilt = keras.Model.from_config(model.get_config())
    rebuilt.set_weights(model.get_weights())
    assert_same_outputs(rebuilt(images, training=False), expected)
    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert_same_outputs(loaded(images, training=False), expected)


@pytest.mark.parametrize("name", registry_params(MODELS, CHAIN_HEAVY_VARIANTS))
def test_int8_chain_litert_reference_equals_tflite_micro(name, digit_batches):
    """QAT wraps the model; int8 with builtin ops only; TFLite Micro == LiteRT reference kernels.

    One known difference is allowed, and only where it starts: LiteRT's reference FULLY_CONNECTED
    and MUL round their requantisation once, TFLite Micro's twice (gemmlowp style), so a tie
    output differs by 1 LSB (vgg16_cifar's Dense; condensenet50_cifar's BatchNorm MUL with the
    weights this seed gives on an AVX2-only host: 185 of 40,960 outputs, where the product times
    the multiplier is exactly -195.5 / 8). When the outputs differ, the first tensor where the two
    part must be the output of such an op, with identical inputs, 1 LSB apart on at most 2% of it
    (or one value).
    """
    model = _build(name, classifier_activation="linear")  # logits: softmax of a fresh net is flat
    images = digit_batches(model.input_shape[1:], 8)
    calibrate_batchnorm(model, images)

    qat = quantize.quantize_model(model)
    qat_out = qat(images[:2], training=False).numpy()
    assert qat_out.shape == (2, model.output_shape[-1]) and np.isfinite(qat_out).all()

    tflite, _, x8, reference, micro = int8_outputs(model, images)
    assert len(np.unique(reference)) > 4, "int8 outputs are flat: the check would prove nothing"
    assert_micro_matches_reference(tflite, x8, reference, micro)
    optimised = convert.run_litert(tflite, x8)
    print(f"{name}: optimised-kernel spread {np.abs(optimised.astype(int) - reference).max()} LSB, "
          f"TFLite Micro vs reference {np.abs(micro.astype(int) - reference).max()} LSB")


@pytest.mark.parametrize("name", MODELS)
def test_published_params_and_macs(name):
    info = kerasnets.model_info(name)
    stats = kerasnets.profile(kerasnets.create_model(name))
    assert stats["params"] == pytest.approx(info.params, rel=SIZE_TOLERANCE)
    assert stats["macs"] == pytest.approx(info.macs, rel=SIZE_TOLERANCE)
