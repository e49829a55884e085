"""Keras 3 models in: rebuilt as tf_keras models with Keras 3's own outputs, then pruned, QAT-wrapped,
converted to int8 and run by TFLite Micro; a Keras 3 `.keras` file through `kerasnets export`."""
import json
import subprocess
import sys

import keras  # Keras 3 (the package selects tf_keras only for `tf.keras`)
import numpy as np
import pytest
import tf_keras

from conftest import assert_same_outputs
from kerasnets.micro import arena
from kerasnets import keras3
from kerasnets.pipelines import convert, data, prune, quantize, saving
from test_cli import kerasnets

SHAPE = (32, 32, 3)
K = keras.layers


def _inverted_residual(x, out, stride, name):
    """MobileNetV2's block: 1x1 expand, 3x3 depthwise, 1x1 project (+ Add when shapes allow)."""
    width = x.shape[-1]
    y = K.Conv2D(width * 4, 1, use_bias=False, name=f"{name}_expand")(x)
    y = K.ReLU(6.0, name=f"{name}_expand_relu")(K.BatchNormalization(name=f"{name}_expand_bn")(y))
    if stride == 2:  # as keras.applications: explicit padding, then a valid strided depthwise conv
        y = K.ZeroPadding2D(((0, 1), (0, 1)), name=f"{name}_pad")(y)
    y = K.DepthwiseConv2D(3, strides=stride, padding="same" if stride == 1 else "valid", use_bias=False,
                          name=f"{name}_dw")(y)
    y = K.Activation("relu6", name=f"{name}_dw_relu")(K.BatchNormalization(name=f"{name}_dw_bn")(y))
    y = K.BatchNormalization(name=f"{name}_project_bn")(K.Conv2D(out, 1, use_bias=False, name=f"{name}_project")(y))
    return K.Add(name=f"{name}_add")([x, y]) if stride == 1 and width == out else y


def mobilenet_v2_style(images, *, pixels=True, head="softmax"):
    """A small MobileNetV2 in Keras 3 whose first layers scale pixels in [0, 255] to [-1, 1]
    (`pixels`; else it takes [-1, 1], kerasnets' convention) and normalise each channel."""
    inputs = keras.Input(SHAPE, name="image")
    x = K.Rescaling(1 / 127.5, offset=-1, name="rescale")(inputs) if pixels else inputs
    norm = K.Normalization(name="normalize")
    norm.adapt(images / 127.5 - 1 if pixels else images)
    x = norm(x)
    x = K.Conv2D(16, 3, strides=2, padding="same", use_bias=False, name="stem")(x)
    x = K.ReLU(6.0, name="stem_relu")(K.BatchNormalization(name="stem_bn")(x))
    x = K.SeparableConv2D(16, 3, padding="same", activation="relu6", name="sep")(x)
    for name, out, stride in [("b1", 24, 2), ("b2", 24, 1), ("b3", 32, 2), ("b4", 32, 1)]:
        x = _inverted_residual(x, out, stride, name)
    x = K.Dropout(0.2, name="drop")(K.GlobalAveragePooling2D(name="pool")(x))
    model = keras.Model(inputs, K.Dense(10, activation=head, name="head")(x), name="mnv2_keras3")
    rng = np.random.default_rng(0)  # BatchNorm statistics far from identity, as after training
    for layer in model.layers:
        if isinstance(layer, K.BatchNormalization):
            shape = layer.gamma.shape
            layer.set_weights([rng.uniform(0.5, 1.5, shape), rng.normal(0, 0.1, shape),
                               rng.normal(0, 0.1, shape), rng.uniform(0.5, 2, shape)])
    return model


@pytest.fixture(scope="module")
def pixels():
    return (data.digits_images(SHAPE, 32)[0] + 1) * 127.5  # real digits as pixels in [0, 255]


@pytest.fixture(scope="module")
def models(pixels):
    keras.utils.set_random_seed(0)
    original = mobilenet_v2_style(pixels)
    return original, keras3.from_keras3(original)


def test_same_graph_names_weights_and_outputs(models, pixels):
    original, converted = models
    assert isinstance(converted, tf_keras.Model) and converted.name == "mnv2_keras3"
    names = [layer.name for layer in converted.layers]
    # relu6 as a layer's own activation becomes a ReLU(6) after it: tf_keras has no relu6 function
    assert sorted(names) == sorted([layer.name for layer in original.layers] + ["sep_relu6"])
    for layer in original.layers:
        for ours, theirs in zip(converted.get_layer(layer.name).get_weights(), layer.get_weights()):
            np.testing.assert_array_equal(ours, theirs)
    expected = np.asarray(original(pixels, training=False))
    got = converted(pixels, training=False).numpy()
    print(f"Keras 3 vs tf_keras: max abs diff {np.abs(expected - got).max():.2e}")
    assert_same_outputs(got, expected, atol=1e-5)
    add = converted.get_layer("b2_add")
    assert {node.name for node in add.inbound_nodes[0].inbound_layers} == {"b1_project_bn", "b2_project_bn"}


def test_qat_int8_and_tflite_micro(models, pixels):
    original, converted = models
    qat = quantize.quantize_model(converted)
    for batch in np.split(pixels, 4):  # a few training steps' worth of quantiser ranges
        qat(batch, training=True)
    tflite = convert.export(qat, "int8", pixels)
    ops = convert.graph_summary(tflite)["ops"]
    assert "DEQUANTIZE" not in ops and not [op for op in ops if op.startswith(("FLEX", "CUSTOM"))], ops
    interpreter = convert.litert_interpreter(tflite, reference=True)
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    assert inp["dtype"] == np.int8 and out["dtype"] == np.int8
    x8 = convert.quantize_input(pixels, inp)
    reference = convert.run_litert(tflite, x8, reference=True)
    np.testing.assert_array_equal(arena.run_micro(tflite, x8), reference)
    assert len(np.unique(reference)) > 4, "int8 outputs are flat: the check would prove nothing"
    int8 = convert.dequantize_output(reference, out)
    expected = np.asarray(original(pixels, training=False))
    agreement = float(np.mean(int8.argmax(-1) == expected.argmax(-1)))
    print(f"int8 (QAT) vs Keras 3 float: top-1 agreement {agreement:.3f}, "
          f"max abs diff {np.abs(int8 - expected).max():.4f}")
    assert agreement >= 0.8


def test_pruning_removes_channels(models, pixels):
    _, converted = models
    small, summary = prune.compress(converted, "l1", ratio=0.3)
    assert summary["params_after"] < 0.8 * summary["params_before"]
    assert small.get_layer("b1_expand").filters < converted.get_layer("b1_expand").filters
    assert small.get_layer("head").units == 10 and small(pixels[:2]).shape == (2, 10)


def test_keras3_file_through_the_command_line(models, tmp_path):
    images = data.digits_images(SHAPE, 32)[0]  # what `kerasnets export` calibrates with: [-1, 1]
    original = mobilenet_v2_style(images, pixels=False, head="linear")  # an untrained softmax is flat in int8
    path = tmp_path / "mnv2.keras"
    original.save(path)
    assert keras3.is_keras3_file(path)
    models[1].save(tmp_path / "tf_keras.keras")
    assert not keras3.is_keras3_file(tmp_path / "tf_keras.keras")  # tf_keras files stay tf_keras'
    assert_same_outputs(saving.load_keras(str(path))(images, training=False), original(images, training=False))
    out = tmp_path / "out"
    result = kerasnets("export", f"--keras={path}", "--mode=int8", "--micro", "--min_agreement=0", f"--out={out}")
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout.splitlines()[-1])
    assert summary["mode"] == "int8" and (out / "mnv2.tflite").exists()
    assert json.loads((out / "micro" / "arena.json").read_text())["arena_bytes"] > 0


def test_standard_layers_sequential_and_shared_layers():
    inputs = [keras.Input((8, 8, 3), name="left"), keras.Input((8, 8, 3), name="right")]
    shared = K.Conv2D(4, 3, padding="same", activation="hard_silu", name="shared")
    a, b = shared(inputs[0]), shared(inputs[1])  # one layer, two calls
    x = K.Concatenate(name="cat")([K.MaxPooling2D(2, name="max")(a), K.AveragePooling2D(2, name="avg")(b)])
    x = K.Multiply(name="mul")([x, K.LeakyReLU(0.1, name="leaky")(x)])
    x = K.Reshape((4, 4, 8), name="reshape")(K.Flatten(name="flat")(x))
    functional = keras.Model(inputs, [K.GlobalMaxPooling2D(name="gmax")(x),
                                      K.Softmax(name="soft")(K.Dense(5, name="dense")(x))])
    sequential = keras.Sequential([keras.Input((8, 8, 3)), K.Conv2D(4, 3, activation="relu", name="c"),
                                   K.BatchNormalization(name="bn"), K.Flatten(name="f"), K.Dense(3, name="d")])
    x = np.random.default_rng(0).normal(size=(4, 8, 8, 3)).astype("float32")
    for model, args in [(functional, [x, x[::-1]]), (sequential, x)]:
        converted = keras3.from_keras3(model)
        for ours, theirs in zip(converted(args), model(args)):
            assert_same_outputs(ours, theirs)
    assert len(keras3.from_keras3(functional).get_layer("shared").inbound_nodes) == 2


def test_unsupported_layers_and_models_are_refused_by_name():
    inputs = keras.Input((8, 8, 3))
    x = K.Lambda(lambda t: t * 2, name="double")(inputs)
    x = K.LSTM(4, name="memory")(K.Reshape((8, 24))(x))
    with pytest.raises(ValueError, match=r"unsupported layers 'double' \(Lambda\), 'memory' \(LSTM\); "
                                         r"supported: InputLayer, Conv2D, DepthwiseConv2D"):
        keras3.from_keras3(keras.Model(inputs, x))
    inner = keras.Sequential([keras.Input((8, 8, 3)), K.Conv2D(2, 1)], name="backbone")
    with pytest.raises(ValueError, match=r"'backbone' \(Sequential\) \(a nested model"):
        keras3.from_keras3(keras.Model(inputs, inner(inputs)))
    with pytest.raises(ValueError, match=r"activation 'hard_tanh' has no tf_keras equivalent"):
        keras3.from_keras3(keras.Model(inputs, K.Activation("hard_tanh", name="act")(inputs)))
    with pytest.raises(TypeError, match="tf_keras model already"):
        keras3.from_keras3(tf_keras.Sequential([tf_keras.Input((2,)), tf_keras.layers.Dense(1)]))


def test_kerasnets_from_keras3_is_the_converter_and_import_stays_light():
    code = ("import sys, kerasnets\n"
            "print(sorted(m for m in ('tensorflow', 'tf_keras', 'keras') if m in sys.modules))\n"
            "from kerasnets import keras3\n"
            "print(kerasnets.from_keras3 is keras3.from_keras3, 'from_keras3' in kerasnets.__all__)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    # nothing heavy on `import kerasnets`; the converter comes on first use
    assert result.stdout.splitlines() == ["[]", "True True"]
