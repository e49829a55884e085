"""An int8 requantisation (QUANTIZE int8 -> int8) that TFLite's kernels round through a coarse grid
is exported as a depthwise convolution that rounds it as the QAT model does (pipelines/requantize.py)."""
import numpy as np
import tf_keras as keras

from kerasnets.pipelines import convert, quantize, requantize

L = keras.layers
CHANNELS = 8


def _concatenating_net(factor, images):
    """A feature map read by a conv and entering a concatenation, beside a conv whose outputs span
    `factor` times its range: the converter requantises it with M ~ 1 / factor (3: in the 1/2-step
    band of the coarse grid)."""
    inputs = keras.Input(images.shape[1:])
    features = L.ReLU(name="features")(L.Conv2D(CHANNELS, 3, padding="same", name="stem")(inputs))
    wide = L.Conv2D(CHANNELS, 3, padding="same", name="wide")
    joined = L.Concatenate(name="joined")([features, wide(features)])
    mixed = L.Add()([L.Conv2D(8, 1, name="mix")(joined), L.Conv2D(8, 1, name="side")(features)])
    model = keras.Model(inputs, L.Dense(4, name="head")(L.GlobalAveragePooling2D()(mixed)))
    probe = keras.Model(inputs, [features, wide.output])
    spans = [float(np.ptp(values)) for values in probe.predict(images, verbose=0)]
    kernel, bias = wide.get_weights()
    wide.set_weights([kernel * factor * spans[0] / spans[1], bias])
    return model


def _requantisation_off(tflite, images) -> float:
    """Share of the requantised feature map's integers (the int8 concatenation's first input) that
    differ from the exact requantisation of the integers it was made from, round((q - z) * s / s') + z'."""
    interpreter = convert.litert_interpreter(tflite, reference=True, keep_tensors=True)
    details, ops = interpreter.get_tensor_details(), interpreter._get_ops_details()
    requantised = next(op for op in ops if op["op_name"] == "CONCATENATION")["inputs"][0]
    source = next(op for op in ops if requantised in op["outputs"])["inputs"][0]
    (scale, zero_point), (new_scale, new_zero_point) = (details[t]["quantization"] for t in (source, requantised))
    inputs = convert.quantize_input(images, interpreter.get_input_details()[0])
    off = []
    for item in inputs:
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], item[None])
        interpreter.invoke()
        values = interpreter.get_tensor(source).astype(np.float64)
        exact = np.clip(np.floor((values - zero_point) * scale / new_scale + 0.5) + new_zero_point, -128, 127)
        off.append(interpreter.get_tensor(requantised) != exact)
    return float(np.mean(off))


def _qat_and_images(factor):
    keras.utils.set_random_seed(0)
    images = np.random.default_rng(0).uniform(-1, 1, (16, 8, 8, 3)).astype(np.float32)
    return quantize.quantize_model(_concatenating_net(factor, images), calibration=images), images


def test_a_coarse_requantisation_is_exported_as_a_depthwise_convolution_rounded_once(monkeypatch):
    qat, images = _qat_and_images(3.0)
    tflite = convert.export(qat, "int8")
    ops = convert.graph_summary(tflite)["ops"]
    assert "QUANTIZE" not in ops and "DEPTHWISE_CONV_2D" in ops, ops
    assert _requantisation_off(tflite, images) < 0.005

    # the control: as the converter writes it, TFLite's QUANTIZE puts a sixth of the requantised
    # values a step off (17%; a quarter of those not clamped at the ReLU's zero)
    monkeypatch.setattr(requantize, "requantise_exactly", lambda tflite: tflite)
    as_converted = convert.export(qat, "int8")
    assert "QUANTIZE" in convert.graph_summary(as_converted)["ops"]
    assert _requantisation_off(as_converted, images) > 0.15


def _requantisation_rows(qat, tflite, images):
    return [row for row in convert.qat_op_fidelity(qat, tflite, images)
            if row["op"] in ("QUANTIZE", "DEPTHWISE_CONV_2D")]


def test_op_fidelity_names_a_coarse_requantisation_and_its_rewrite(monkeypatch):
    """`convert.qat_op_fidelity` compares a requantisation with the value it requantises: the
    coarse QUANTIZE (the control) departs, the depthwise convolution written for it does not."""
    qat, images = _qat_and_images(3.0)
    rewritten = _requantisation_rows(qat, convert.export(qat, "int8"), images)
    monkeypatch.setattr(requantize, "requantise_exactly", lambda tflite: tflite)
    as_converted = _requantisation_rows(qat, convert.export(qat, "int8"), images)
    assert [(row["op"], row["layer"]) for row in as_converted] == [("QUANTIZE", "quant_features")], as_converted
    assert as_converted[0]["off"] > 0.15
    assert [(row["op"], row["layer"]) for row in rewritten] == [("DEPTHWISE_CONV_2D", "quant_features")], rewritten
    assert rewritten[0]["off"] < 0.005


def test_a_requantisation_that_rounds_once_is_left_alone():
    qat, images = _qat_and_images(1.5)  # M ~ 2/3: TFLite's kernel rounds it once
    tflite = convert.export(qat, "int8")
    assert "QUANTIZE" in convert.graph_summary(tflite)["ops"]
    assert _requantisation_off(tflite, images) < 0.005
