"""QAT models saved and loaded again: the .keras format (the pipeline's checkpoints) and .h5, after
training has moved every quantiser range away from its initial value."""
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_model_optimization as tfmot
import tf_keras as keras

import kerasnets
from kerasnets.pipelines import convert, data, quantize
from kerasnets.pipelines.saving import load_keras

SHAPE = (32, 32, 3)
# one per kind of QAT layer the zoo produces: conv/BN/Add, hard activations and squeeze-excite
# Multiply (the zoo's own QuantizeConfigs), Ghost slices and depthwise convs (a pre-activation
# BatchNorm's `quantize.DepthwiseBatchNorm`: below)
MODELS = ["resnet8", "mobilenet_v3_small_100", "ghostnet_050"]


@pytest.fixture(scope="module")
def digits():
    x, y = data.digits_images(SHAPE, 64)
    return x, keras.utils.to_categorical(y, 10)


def _trained_qat(name, digits):
    qat = quantize.quantize_model(kerasnets.create_model(name, input_shape=SHAPE, classes=10))
    qat.compile(keras.optimizers.SGD(0.05, momentum=0.9), "categorical_crossentropy")
    qat.fit(*digits, batch_size=16, epochs=1, verbose=0)
    return qat


def _int8_steps_off(qat, tflite, images, reference=False):
    """|int8 output - QAT output| of each output value on `images`, in int8 output steps (LiteRT's
    default kernels, or its reference kernels, which TFLite Micro matches)."""
    scale = convert.litert_interpreter(tflite).get_output_details()[0]["quantization"][0]
    return np.abs(convert.predict_litert(tflite, images, reference=reference) - qat.predict(images, verbose=0)) / scale


@pytest.mark.parametrize("name, suffix", [(name, ".keras") for name in MODELS] + [("resnet8", ".h5")])
def test_trained_qat_model_loads_back_with_its_ranges(name, suffix, digits, tmp_path):
    qat = _trained_qat(name, digits)
    input_range = next(layer for layer in qat.layers if type(layer).__name__ == "QuantizeLayer").weights
    assert input_range[0].numpy() != -6.0  # training moved the input range off its initial value
    path = str(tmp_path / f"qat{suffix}")
    qat.save(path)
    loaded = load_keras(path)
    x = digits[0][:8]
    np.testing.assert_array_equal(loaded(x, training=False), qat(x, training=False))
    # and once more: a loaded model saves and loads like a fresh one
    loaded.save(path)
    np.testing.assert_array_equal(load_keras(path)(x, training=False), qat(x, training=False))


def test_condensed_layers_loaded_from_a_file_wrap_for_qat(digits, tmp_path):
    """CondenseNet's condensed layers read a subset of their inputs; loaded from .keras, they had
    recorded that subset's size as their input shape, so QAT's clone rebuilt them for the wrong
    number of inputs and `quantize_model` failed (condensenet50_cifar: "[?,464] x [232,10]")."""
    from kerasnets import layers as zoo

    inputs = keras.Input(SHAPE)
    x = zoo.IndexedGroupConv(8, groups=2, indices=[0, 2, 1, 4, 5, 7], use_bias=False)(
        keras.layers.Conv2D(8, 3, padding="same")(inputs))
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, zoo.IndexedDense(10, indices=[1, 3, 4, 6])(x))
    path = str(tmp_path / "condensed.keras")
    model.save(path)
    loaded = load_keras(path)
    x = digits[0][:8]
    np.testing.assert_array_equal(quantize.quantize_model(loaded, calibration=x).predict(x, verbose=0),
                                  quantize.quantize_model(model, calibration=x).predict(x, verbose=0))


def test_qat_file_saved_with_tfmot_own_layers_is_refused_with_the_way_out(tmp_path):
    plain = tfmot.quantization.keras.quantize_model(
        kerasnets.create_model("resnet8", input_shape=SHAPE, classes=10))
    path = str(tmp_path / "plain.keras")
    plain.save(path)
    with pytest.raises(ValueError, match=r"quantize_model, or use the \.h5 format"):
        load_keras(path)


def test_batchnorm_after_dense_survives_qat_int8_conversion(digits):
    """VGG's classifier (Dense-BN-ReLU-Dense): TFMOT folds BN only into convs; the int8 model must
    still apply the BatchNorm, within 2 steps of the output scale of the QAT model."""
    layers = keras.layers
    inputs = keras.Input(SHAPE)
    x = layers.GlobalAveragePooling2D()(inputs)
    x = layers.ReLU()(layers.BatchNormalization()(layers.Dense(32)(x)))
    model = keras.Model(inputs, layers.Dense(10)(x))
    rng = np.random.default_rng(0)  # BN far from identity, as after training
    model.layers[3].set_weights([rng.uniform(0.05, 0.2, 32), rng.normal(0, 0.1, 32), rng.normal(0, 1, 32),
                                 rng.uniform(20, 50, 32)])
    qat = quantize.quantize_model(model)
    qat.compile(keras.optimizers.SGD(0.01), "categorical_crossentropy")
    qat.fit(*digits, batch_size=16, epochs=1, verbose=0)
    tflite = convert.export(qat, "int8", digits[0][:16])
    assert _int8_steps_off(qat, tflite, digits[0]).max() <= 2


def test_max_pool_feeding_concatenations_converts_to_the_qat_model(digits):
    """TripleNet's transitions: Conv-BN-ReLU6, a max pool, and the pool's output concatenated in
    several places. TFMOT quantises those concatenations at their outputs only, so without the fix
    the converter gave the pool's output a concatenation's scale and its input the ReLU6's, and
    refused the model ("'tfl.max_pool_2d' op quantization parameters violate the same scale
    constraint"). The int8 model must convert and stay within 2 output steps of the QAT model."""
    layers = keras.layers
    inputs = keras.Input(SHAPE)
    x = layers.Conv2D(8, 3, padding="same", use_bias=False)(inputs)
    x = layers.ReLU(6.0)(layers.BatchNormalization()(x))
    pooled = layers.MaxPooling2D(2)(x)
    first = layers.Conv2D(8, 3, padding="same")(pooled)
    second = layers.Conv2D(8, 3, padding="same")(layers.Concatenate()([pooled, first]))
    x = layers.Concatenate()([pooled, first, second])
    model = keras.Model(inputs, layers.Dense(10)(layers.GlobalAveragePooling2D()(x)))
    convert.calibrate_batchnorm(model, digits[0][:32])
    qat = quantize.quantize_model(model)
    qat.compile(keras.optimizers.SGD(0.01), "categorical_crossentropy")
    qat.fit(*digits, batch_size=16, epochs=1, verbose=0)
    tflite = convert.export(qat, "int8", digits[0][:16])
    assert "MAX_POOL_2D" in convert.graph_summary(tflite)["ops"]
    assert _int8_steps_off(qat, tflite, digits[0]).max() <= 2


@pytest.mark.parametrize("branches", [6, 8])
def test_a_concatenation_of_any_width_is_quantised_only_at_its_output(branches, digits):
    """G-GhostNet's mix term: feature maps pooled one by one, the pooled vectors concatenated (up to
    10 per CONCATENATION). The int8 CONCATENATION takes one scale in and out, so each MEAN writes the
    concatenation's scale directly; TFMOT's own transform drops the inputs' output quantisers for up
    to 6 inputs, and a wider concatenation kept them, rounding each pooled vector twice in the QAT
    model (op by op: MEAN outputs up to 1.13 steps from the QAT layer's, a quarter of them more
    than half a step). Any width: no quantiser on the inputs, each MEAN within its own rounding."""
    layers = keras.layers
    inputs = keras.Input(SHAPE)
    pooled = []
    for i in range(branches):
        x = layers.ReLU()(layers.Conv2D(4, 3, strides=2, padding="same")(inputs))
        pooled.append(layers.GlobalAveragePooling2D(keepdims=True, name=f"pool{i}")(x))
    x = layers.Conv2D(16, 1)(layers.Concatenate()(pooled))
    model = keras.Model(inputs, layers.Dense(10)(layers.Flatten()(x)))
    qat = quantize.quantize_model(model, calibration=digits[0][:32])
    qat.compile(keras.optimizers.SGD(0.01), "categorical_crossentropy")
    qat.fit(*digits, batch_size=16, epochs=1, verbose=0)
    for i in range(branches):
        wrapper = qat.get_layer(f"quant_pool{i}")
        assert wrapper.quantize_config.get_output_quantizers(wrapper.layer) == [], f"pool{i} keeps its quantiser"
    tflite = convert.export(qat, "int8", digits[0][:32])
    means = [row for row in convert.qat_op_fidelity(qat, tflite, digits[0][:16]) if row["op"] == "MEAN"]
    assert len(means) == branches and all(row["max_steps"] <= 0.76 for row in means), means


def _concatenating_net(separate):
    """Two units that each concatenate a 3x3 conv's output to the features, and the convs feeding
    only those concatenations. DenseNet's layer: the features are joined as they are, and the next
    unit reads them too, so TFMOT's ConcatTransform does not match; `separate`: the features pass
    a 1x1 conv that feeds nothing else, so every input has one reader and it matches."""
    layers = keras.layers
    inputs = keras.Input(SHAPE)
    features = layers.Conv2D(8, 3, padding="same")(inputs)
    feeds = []
    for i in range(2):
        grown = layers.Conv2D(4, 3, padding="same", name=f"grow{i}")(layers.ReLU()(features))
        kept = layers.Conv2D(8, 1, name=f"keep{i}")(features) if separate else features
        feeds += [f"grow{i}"] + ([f"keep{i}"] if separate else [])
        features = layers.Concatenate()([kept, grown])
    return keras.Model(inputs, layers.Dense(10)(layers.GlobalAveragePooling2D()(features))), feeds


@pytest.mark.parametrize("separate", [False, True])
def test_a_conv_feeding_only_a_concatenation_is_rounded_once_as_in_int8(separate, digits, tmp_path):
    """TFMOT quantises a concatenation at its output, and its ConcatTransform drops the output
    quantisers of the layers feeding it, but not a conv's activation quantiser (and not at all
    where an input of the concatenation has other readers, as in DenseNet). The QAT model then
    rounded the conv's output to its own range and again to the concatenation's, where the int8
    model rounds it once, to the concatenation's scale (measured in DenseNet-40: 21-24% of its 3x3
    convs' outputs more than half a step from the QAT layer's, up to 0.97 steps). Now each such
    conv has no quantiser of its own, its int8 op is within its own rounding and the logits within
    one step of the QAT model's (two or more before, in one of the two nets); saved and loaded, the
    QAT model is the same model (its configs say so, not a patched method)."""
    model, feeds = _concatenating_net(separate)
    qat = quantize.quantize_model(model, calibration=digits[0][:32])
    qat.compile(keras.optimizers.SGD(0.01), keras.losses.CategoricalCrossentropy(from_logits=True))
    qat.fit(*digits, batch_size=16, epochs=1, verbose=0)
    for name in feeds:
        wrapper = qat.get_layer(f"quant_{name}")
        assert wrapper.quantize_config.get_activations_and_quantizers(wrapper.layer) == [], name
    tflite = convert.export(qat, "int8", digits[0][:32])
    rows = {row["layer"]: row for row in convert.qat_op_fidelity(qat, tflite, digits[0][:16])}
    for name in feeds:
        assert rows[f"quant_{name}"]["off"] < 0.01, rows[f"quant_{name}"]
    assert _int8_steps_off(qat, tflite, digits[0], reference=True).max() < 1.5
    qat.save(tmp_path / "qat.keras")
    np.testing.assert_array_equal(load_keras(tmp_path / "qat.keras").predict(digits[0], verbose=0),
                                  qat.predict(digits[0], verbose=0))


def _relu_fed_net():
    """A Conv2D, a DepthwiseConv2D and a Dense, each read only by a ReLU (no BatchNorm between),
    as in a squeeze-excite reduce conv."""
    layers = keras.layers
    inputs = keras.Input(SHAPE)
    features = layers.ReLU()(layers.Conv2D(8, 3, padding="same", name="conv")(inputs))
    features = layers.ReLU()(layers.DepthwiseConv2D(3, padding="same", name="depthwise")(features))
    pooled = layers.GlobalAveragePooling2D()(features)
    return keras.Model(inputs, layers.Dense(10)(layers.ReLU()(layers.Dense(16, name="fc")(pooled))))


RELU_FED = ("conv", "depthwise", "fc")


def test_a_layer_read_only_by_a_relu_keeps_its_kernel_quantiser(digits):
    """TFMOT's LayerReLUQuantize gives a conv or Dense read only by a ReLU the no-op config: no
    output quantiser (right: int8 fuses the ReLU) and no kernel quantiser (wrong: the QAT model ran
    float kernels the int8 model rounds). Each keeps its kernel quantiser and has no activation
    quantiser, and its int8 op is within its own rounding of the QAT layer: 0.1%, 0.2% and 0% of
    the outputs a step off here, where TFMOT's no-op left 8.9% (conv), 4.6% (depthwise) and 34%
    (Dense, up to 1.6 steps)."""
    qat = quantize.quantize_model(_relu_fed_net(), calibration=digits[0][:32])
    qat.compile(keras.optimizers.SGD(0.01), keras.losses.CategoricalCrossentropy(from_logits=True))
    qat.fit(*digits, batch_size=16, epochs=1, verbose=0)
    for name in RELU_FED:
        wrapper = qat.get_layer(f"quant_{name}")
        config = wrapper.quantize_config
        assert config.get_weights_and_quantizers(wrapper.layer), name
        assert config.get_activations_and_quantizers(wrapper.layer) == [] and not config.get_output_quantizers(
            wrapper.layer), name
    tflite = convert.export(qat, "int8", digits[0][:32])
    rows = [row for row in convert.qat_op_fidelity(qat, tflite, digits[0][:16])
            if row["op"] in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED") and row["layer"]]
    assert {row["op"] for row in rows} == {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"}, rows
    for row in rows:
        assert row["off"] < 0.02, row


def test_batchnorm_after_a_concatenation_converts_to_one_exact_int8_op(digits):
    """DenseNet's and CondenseNet's pre-activation BatchNorm, fed by a concatenation (no conv to fold
    into). Left a BatchNorm, the converter ran it as MUL then ADD and rounded the MUL's product of
    every channel to one calibrated int8 scale that no fake-quant op of the QAT model has; with
    factors spread as after training, the BN-ReLU output then departed from the QAT model's
    (measured: 32% of the outputs off by a step or more, the 99th percentile 2 steps).
    QAT now runs it as a 1x1 depthwise convolution, one int8 op rounded once as the QAT model rounds
    it (measured: 0.24% off, those by a one-step rounding tie upstream times the channel's factor)."""
    layers = keras.layers
    inputs = keras.Input(SHAPE)
    first = layers.Conv2D(8, 3, padding="same")(inputs)
    second = layers.Conv2D(8, 3, padding="same")(first)
    norm = layers.BatchNormalization()
    model = keras.Model(inputs, layers.ReLU()(norm(layers.Concatenate()([first, second]))))
    convert.calibrate_batchnorm(model, digits[0][:32])
    gamma, beta, mean, variance = norm.get_weights()
    norm.set_weights([np.geomspace(0.1, 10, 16), beta, mean, variance])  # factors 100x apart
    qat = quantize.quantize_model(model, calibration=digits[0][:32])
    qat.compile(keras.optimizers.SGD(1e-4), "mse")
    qat.fit(digits[0], qat.predict(digits[0], verbose=0), batch_size=16, epochs=1, verbose=0)
    tflite = convert.export(qat, "int8", digits[0][:32])
    ops = convert.graph_summary(tflite)["ops"]
    assert "DEPTHWISE_CONV_2D" in ops and "MUL" not in ops, ops
    steps = _int8_steps_off(qat, tflite, digits[0], reference=True)
    assert np.mean(steps > 0.5) < 0.01, f"{np.mean(steps > 0.5):.1%} of the outputs differ by a step or more"


def test_batchnorm_after_a_concatenation_trains_on_batch_statistics_in_qat(digits, tmp_path):
    """The same pre-activation BatchNorm trains in QAT as in float training: on batch statistics,
    its moving statistics updated. Frozen (the 1x1 depthwise convolution it converts to), it gave
    the conv before it the gradient of the float net in inference mode, here ~10x the training-mode
    one and pointing elsewhere (cosine 0.64); one QAT epoch at 1e-4 took condensenet50_cifar,
    trained on digits to 93%, to 29% (96% on batch statistics)."""
    layers = keras.layers
    keras.utils.set_random_seed(0)
    inputs = keras.Input(SHAPE)
    first = layers.Conv2D(8, 3, padding="same", name="first")(inputs)
    second = layers.Conv2D(8, 3, padding="same")(first)
    x = layers.ReLU()(layers.BatchNormalization(name="pre")(layers.Concatenate()([first, second])))
    x = layers.GlobalAveragePooling2D()(layers.Conv2D(16, 3, strides=2, padding="same")(x))
    model = keras.Model(inputs, layers.Dense(10)(x))
    images, labels = digits[0][:32], digits[1][:32]
    convert.calibrate_batchnorm(model, images)
    qat = quantize.quantize_model(model, calibration=images)

    def first_kernel_gradient(net, training):
        kernel = next(v for v in net.trainable_variables if "first" in v.name and "kernel" in v.name)
        with tf.GradientTape() as tape:
            loss = keras.losses.categorical_crossentropy(labels, net(images, training=training), from_logits=True)
        return tape.gradient(loss, kernel).numpy().ravel()

    float_training, qat_training = first_kernel_gradient(model, True), first_kernel_gradient(qat, True)
    cosine = float_training @ qat_training / np.linalg.norm(float_training) / np.linalg.norm(qat_training)
    size = np.linalg.norm(qat_training) / np.linalg.norm(float_training)
    assert cosine > 0.9 and 0.75 < size < 1.33, f"cosine {cosine:.2f}, size {size:.2f}x the float training's"
    moving_mean = next(v for v in qat.non_trainable_variables if "pre" in v.name and "moving_mean" in v.name)
    before = moving_mean.numpy()
    qat.compile(keras.optimizers.SGD(1e-4), keras.losses.CategoricalCrossentropy(from_logits=True))
    qat.fit(digits[0] * 2 + 1, digits[1], batch_size=16, epochs=1, verbose=0)  # statistics that differ
    assert not np.allclose(moving_mean.numpy(), before), "the moving statistics did not move"
    path = str(tmp_path / "qat.keras")
    qat.save(path)  # and it loads back as it trained
    np.testing.assert_array_equal(load_keras(path)(images, training=False), qat(images, training=False))


def _conv_depthwise_bn(digits, spread):
    """Conv, DepthwiseConv2D, BN-ReLU: the depthwise kernel's channels `spread`x apart in size and the
    BatchNorm undoing it (as training leaves a depthwise layer: the BN scales each channel back)."""
    layers = keras.layers
    inputs = keras.Input(SHAPE)
    depthwise = layers.DepthwiseConv2D(3, padding="same", use_bias=False)
    norm = layers.BatchNormalization()
    x = depthwise(layers.Conv2D(16, 3, padding="same")(inputs))
    model = keras.Model(inputs, layers.ReLU()(norm(x)))
    channel_size = np.geomspace(1 / spread, 1, 16)
    depthwise.set_weights([depthwise.get_weights()[0] * channel_size[:, None]])
    convert.calibrate_batchnorm(model, digits[0][:32])
    return model, depthwise


def test_depthwise_kernel_is_quantised_per_channel_as_int8_runs_it(digits):
    """TFMOT quantises a DepthwiseConv2D kernel (kh, kw, channels, 1) with one range (its last axis),
    and the converter keeps that rounding when it folds the BatchNorm in, so the int8 model ran a
    channel 100x smaller than the largest on one or two int8 levels where TFLite's per-channel
    kernel has 127. Measured without the fix (20 digits' outputs, in output steps): QAT vs float
    99th percentile 5.2, int8 vs QAT 2.7% a step or more off; with it 1.8 and 0.5%."""
    model, depthwise = _conv_depthwise_bn(digits, spread=100)
    qat = quantize.quantize_model(model, calibration=digits[0][:32])
    ranges = qat.get_layer(f"quant_{depthwise.name}")
    kernel_max = next(w for w in ranges.weights if w.name.endswith("kernel_max:0")).numpy()
    np.testing.assert_allclose(kernel_max, np.abs(depthwise.get_weights()[0]).max(axis=(0, 1, 3)), rtol=1e-6)
    tflite = convert.export(qat, "int8", digits[0][:32])
    scale = convert.litert_interpreter(tflite).get_output_details()[0]["quantization"][0]
    fake_quant = qat.predict(digits[0], verbose=0)
    rounding = np.abs(fake_quant - model.predict(digits[0], verbose=0)) / scale
    assert np.percentile(rounding, 99) < 3, f"QAT vs float: 99th percentile {np.percentile(rounding, 99):.1f} steps"
    steps = _int8_steps_off(qat, tflite, digits[0], reference=True)
    assert np.mean(steps > 0.5) < 0.01, f"{np.mean(steps > 0.5):.1%} of the outputs differ by a step or more"


def test_identical_depthwise_carriers_each_fold_their_own_batchnorm(digits):
    """DenseNet's frozen all-ones 1x1 depthwise conv carries each pre-activation BatchNorm. With a
    per-channel kernel quantiser, identical carriers became identical constants that the converter
    merged, folding every carrier's BatchNorm into the one tensor (measured: int8 factors 3-54x
    the BatchNorms'); such a kernel keeps one range, which rounds it the same."""
    layers = keras.layers
    inputs = keras.Input(SHAPE)
    x = layers.Conv2D(8, 3, padding="same")(inputs)
    for k in range(3):
        x = layers.DepthwiseConv2D(1, use_bias=False, depthwise_initializer="ones", trainable=False)(x)
        x = layers.Conv2D(8, 1)(layers.ReLU()(layers.BatchNormalization(name=f"norm{k}")(x)))
    model = keras.Model(inputs, x)
    convert.calibrate_batchnorm(model, digits[0][:32])
    factors = []
    for k in range(3):
        norm = model.get_layer(f"norm{k}")
        gamma, beta, mean, variance = norm.get_weights()
        gamma = np.random.default_rng(k).uniform(0.5, 3, 8)  # each BatchNorm its own factors
        norm.set_weights([gamma, beta, mean, variance])
        factors.append(gamma / np.sqrt(variance + norm.epsilon))
    tflite = convert.export(quantize.quantize_model(model, calibration=digits[0][:32]), "int8", digits[0][:32])
    interpreter = convert.litert_interpreter(tflite)
    tensors = interpreter.get_tensor_details()
    depthwise = [op for op in interpreter._get_ops_details() if op["op_name"] == "DEPTHWISE_CONV_2D"]
    assert len(depthwise) == 3
    for op, factor in zip(depthwise, factors):
        weight = tensors[op["inputs"][1]]
        folded = interpreter.get_tensor(weight["index"]).ravel() * weight["quantization_parameters"]["scales"]
        np.testing.assert_allclose(folded, factor, rtol=1e-3)


def test_qat_model_before_training_runs_the_float_weights_rounded(digits):
    """Right after `quantize_model`, every weight quantiser's range is its weight's (TFMOT starts
    them at [-6, 6] until a training step: a kernel of weights ~0.1 rounded to steps of 0.05), so
    the QAT model evaluated or converted before training is the float model rounded to 8 bits."""
    model, _ = _conv_depthwise_bn(digits, spread=4)
    qat = quantize.quantize_model(model, calibration=digits[0][:32])
    scale = np.ptp(quantize.activation_ranges(qat)[f"quant_{model.layers[-1].name}"]) / 255
    steps = np.abs(qat.predict(digits[0], verbose=0) - model.predict(digits[0], verbose=0)) / scale
    assert np.median(steps) <= 1, f"median {np.median(steps):.1f} output steps off the float model"


def test_calibration_starts_every_activation_range_where_the_float_model_reaches(digits):
    """`quantize_model(model, calibration=images)`: each output range is the float layer's own
    min/max on those images (TFMOT would start every one at [-6, 6]); a batch of the wrong shape is
    refused with the shape it needs."""
    model = kerasnets.create_model("resnet8", input_shape=SHAPE, classes=10)
    images = digits[0][:32]
    default = quantize.quantize_model(model)
    calibrated = quantize.quantize_model(model, calibration=images)
    relu = next(layer for layer in model.layers if isinstance(layer, keras.layers.ReLU))
    seen = keras.Model(model.input, relu.output).predict(images, verbose=0)
    low, high = quantize.activation_ranges(calibrated)[f"quant_{relu.name}"]
    assert low == 0.0 and np.isclose(high, seen.max(), rtol=1e-5)
    assert quantize.activation_ranges(default)[f"quant_{relu.name}"] == (-6.0, 6.0)
    input_layer = next(layer for layer in calibrated.layers if type(layer).__name__ == "QuantizeLayer")
    assert quantize.activation_ranges(calibrated)[input_layer.name][1] == float(images.max())
    with pytest.raises(ValueError, match=r"`images` must be a batch of shape \(N, 32, 32, 3\)"):
        quantize.quantize_model(model, calibration=images[0])


def test_hard_sigmoid_gate_is_quantised_inside_as_int8_computes_it(digits):
    """A squeeze-excite gate relu6(x + 3) / 6 becomes ADD (RELU6 fused) then MUL in int8; the tensor
    between them takes its scale from a fake-quant over its whole range [0, 6] in the QAT model, not
    from the calibration images (which left the deployed gate clipping at ~3.5 of 6). The float model
    the QAT model came from stays unquantised."""
    from kerasnets import blocks

    layers = keras.layers
    inputs = keras.Input(SHAPE)
    x = layers.ReLU()(layers.Conv2D(8, 3, padding="same")(inputs))
    x = blocks.squeeze_excite(x, 4, name="se")
    model = keras.Model(inputs, layers.Dense(10)(layers.GlobalAveragePooling2D()(x)))
    qat = quantize.quantize_model(model, calibration=digits[0][:32])
    assert not model.get_layer("se_gate").quantize_inner and qat.get_layer("quant_se_gate").layer.quantize_inner
    qat.compile(keras.optimizers.SGD(0.01), "categorical_crossentropy")
    qat.fit(*digits, batch_size=16, epochs=1, verbose=0)
    tflite = convert.export(qat, "int8", digits[0][:16])
    interpreter = convert.litert_interpreter(tflite)
    tensors = interpreter.get_tensor_details()
    adds = [op["outputs"][0] for op in interpreter._get_ops_details() if op["op_name"] == "ADD"]
    assert len(adds) == 1  # the gate's +3 (the network has no other ADD)
    assert np.isclose(tensors[adds[0]]["quantization"][0], 6 / 255), tensors[adds[0]]["quantization"]
    assert _int8_steps_off(qat, tflite, digits[0]).max() <= 2


def _net_with_a_dead_channel():
    """Conv-BN-ReLU whose channel 0 never fires, then a depthwise conv and a BatchNorm that sees
    no variance on that channel: the shape found in a trained ShuffleNet v1 unit."""
    layers = keras.layers
    inputs = keras.Input((8, 8, 3))
    x = layers.ReLU()(layers.BatchNormalization(epsilon=1e-5)(layers.Conv2D(4, 1, use_bias=False)(inputs)))
    x = layers.DepthwiseConv2D(3, padding="same", use_bias=False)(x)
    x = layers.ReLU()(layers.BatchNormalization(epsilon=1e-5)(x))
    model = keras.Model(inputs, layers.Dense(3)(layers.GlobalAveragePooling2D()(x)))
    norm, dead_norm = model.layers[2], model.layers[5]
    gamma, beta, mean, variance = norm.get_weights()
    norm.set_weights([gamma, np.where(np.arange(4) == 0, -100.0, beta), mean, variance])  # channel 0 dead
    gamma, beta, mean, variance = dead_norm.get_weights()
    # Harmless on a dead input, but folded with 1/sqrt(epsilon) this gamma makes the channel's int8
    # weight scale ~40 x 316 times its neighbours' (the trained ShuffleNet's channel was ~7000x).
    dead_norm.set_weights([np.where(np.arange(4) == 0, 40.0, gamma), beta, mean, variance])
    return model


def test_a_dead_channel_does_not_stop_xnnpack_running_the_qat_int8_model():
    """Folded with gamma/sqrt(epsilon), a dead channel's weights set one int8 scale so coarse that
    XNNPACK refused the whole model ("failed to prepare"); the Keras model must not change."""
    keras.utils.set_random_seed(0)  # the other weights are drawn: the same case every run
    images = np.random.default_rng(0).uniform(0, 1, (32, 8, 8, 3)).astype("float32")
    model = _net_with_a_dead_channel()
    convert.calibrate_batchnorm(model, images)
    assert model.layers[5].moving_variance.numpy()[0] < 1e-9  # the case under test
    model = quantize.quantize_model(model, calibration=images)
    before = [w.numpy().copy() for w in model.weights]
    tflite = convert.export(model, "int8", images)
    assert all(np.array_equal(a, w.numpy()) for a, w in zip(before, model.weights))
    x8 = convert.quantize_input(images, convert.litert_interpreter(tflite).get_input_details()[0])
    xnnpack, reference = convert.run_litert(tflite, x8), convert.run_litert(tflite, x8, reference=True)
    assert np.abs(xnnpack.astype(int) - reference.astype(int)).max() <= 2
    assert convert.parity(model, tflite, images)["top1_agreement"] >= 0.9


def _resnet8_qat_and_int8(digits):
    """(float model, its QAT model from calibrated ranges, the QAT model's int8 conversion)."""
    model = kerasnets.create_model("resnet8", input_shape=SHAPE, classes=10, classifier_activation="linear")
    convert.calibrate_batchnorm(model, digits[0][:32])
    qat = quantize.quantize_model(model, calibration=digits[0][:32])
    return model, qat, convert.export(qat, "int8", digits[0][:32])


def _halve_a_qat_kernel(qat):
    """The planted fault: one conv's QAT kernel halved after conversion."""
    kernel = next(w for w in qat.get_layer("quant_stack2_conv1_conv").weights if w.name.endswith("/kernel:0"))
    kernel.assign(kernel * 0.5)


def test_tensor_drift_starts_at_the_op_that_departs(digits):
    """`convert.qat_tensor_drift` compares each int8 tensor with the QAT model's end to end. As
    converted, every matched tensor of resnet8 sits within a step of the QAT model's (median); with
    one conv's QAT kernel halved after conversion, the drift starts at that conv's op (the ops before
    it unchanged) and reaches the logits."""
    _, qat, tflite = _resnet8_qat_and_int8(digits)
    before = [row for row in convert.qat_tensor_drift(qat, tflite, digits[0][:8]) if row["layer"]]
    assert len(before) >= 12 and all(row["median_steps"] <= 1 for row in before), before
    _halve_a_qat_kernel(qat)
    after = [row for row in convert.qat_tensor_drift(qat, tflite, digits[0][:8]) if row["layer"]]
    first = next(i for i, row in enumerate(after) if row["median_steps"] > 1)
    assert after[first]["layer"] == "quant_stack2_conv1_relu", after
    assert after[:first] == before[:first]
    assert after[-1]["median_steps"] > 1, after[-1]


def test_op_fidelity_finds_the_one_int8_op_that_departs_from_its_qat_layers(digits):
    """`convert.qat_op_fidelity` runs each int8 op on the int8 model's own inputs against the QAT
    layers it came from. A faithful conversion keeps every op within one output step; with one
    conv's QAT kernel scaled after conversion, that op, and only that op, departs. The float model
    in place of the QAT model is refused."""
    model, qat, tflite = _resnet8_qat_and_int8(digits)
    rows = [row for row in convert.qat_op_fidelity(qat, tflite, digits[0][:8]) if row["layer"]]
    assert len(rows) >= 12 and all(row["max_steps"] <= 1.01 for row in rows), rows
    _halve_a_qat_kernel(qat)
    departing = {row["layer"] for row in convert.qat_op_fidelity(qat, tflite, digits[0][:8])
                 if row["layer"] and row["max_steps"] > 1.01}
    assert departing == {"quant_stack2_conv1_relu"}, departing
    with pytest.raises(ValueError, match="`qat` .* has no QAT layers"):
        convert.qat_op_fidelity(model, tflite, digits[0][:8])


def test_an_input_range_on_a_half_step_zero_point_converts_to_the_qat_input_grid(digits):
    """Images normalised to [-1, 1] put the input range's zero point on a half step (127.5), which
    TensorFlow's fake quantisation and the converter rounded apart: the QAT model took white pixels
    to 1.0039 (128 steps above its zero point), the int8 model's input went no further than 0.9961.
    Converted with the zero point settled (`quantize.zero_points_settled`), every input value the QAT
    model's quantiser gives is one the int8 model's input represents, and the QAT model keeps its range."""
    inputs = keras.Input(SHAPE)
    x = keras.layers.Conv2D(8, 3, activation="relu")(inputs)
    outputs = keras.layers.Dense(10)(keras.layers.GlobalAveragePooling2D()(x))
    images = digits[0][:32]
    qat = quantize.quantize_model(keras.Model(inputs, outputs), calibration=images)
    input_range = next(iter(quantize.activation_ranges(qat).values()))
    assert input_range == (-1.0, 1.0), "the images do not span [-1, 1]: no half-step zero point to settle"

    details = convert.litert_interpreter(convert.to_int8(qat, images)).get_input_details()[0]
    qat_values = convert.qat_input(qat, images)
    assert qat_values.max() > 1.0  # white pixels, rounded up to the QAT grid's 128th step
    represented = convert.dequantize_output(convert.quantize_input(qat_values, details), details)
    np.testing.assert_allclose(represented, qat_values, atol=1e-6)
    assert next(iter(quantize.activation_ranges(qat).values())) == input_range
