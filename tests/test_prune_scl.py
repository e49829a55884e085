"""SCL channel masks: masked twins, the straight-through step, the connection penalty, training on
digits, export to a smaller model that matches the masked one, int8 and TFLite Micro."""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

import kerasnets  # noqa: E402
from kerasnets.micro import arena  # noqa: E402
from kerasnets.pipelines import convert, data, train as train_mod  # noqa: E402
from kerasnets.pipelines.prune import scl  # noqa: E402
from kerasnets.pipelines.prune.graph import analyse  # noqa: E402

from conftest import assert_same_outputs, calibrate_batchnorm  # noqa: E402

L = keras.layers
SHAPE = (32, 32, 1)


def _resnet8(images):
    model = kerasnets.create_model("resnet8", input_shape=SHAPE, classes=10)
    calibrate_batchnorm(model, images)
    return model


def _masked_layers(model):
    kinds = (scl.MaskedConv2D, scl.MaskedDense, scl.MaskedSeparableConv2D)
    return [layer for layer in model.layers if isinstance(layer, kinds)]


def _concat_model():
    """A conv that reads a fixed channel (the input) beside prunable ones, and a separable conv."""
    inputs = L.Input((8, 8, 2), name="input")
    a = L.Conv2D(4, 3, padding="same", name="a")(inputs)
    a = L.BatchNormalization(name="a_bn")(a)
    x = L.Concatenate(name="cat")([inputs, L.ReLU(name="a_relu")(a)])
    x = L.SeparableConv2D(6, 3, padding="same", name="b")(x)
    x = L.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, L.Dense(3, name="head")(x))


def _set_scores(layer, values):
    layer.mask_score.assign(np.asarray(values, np.float32))


def test_masked_model_starts_as_the_original(digit_batches):
    images = digit_batches(SHAPE, 8)
    model = _resnet8(images)
    masked = scl.attach_masks(model)
    names = {layer.name: type(layer).__name__ for layer in _masked_layers(masked)}
    assert names["head_fc"] == "MaskedDense" and names["stack3_conv2_conv"] == "MaskedConv2D"
    assert "stem_conv" not in names  # it reads only the model's input, a fixed channel
    assert all(float(np.min(layer.mask_score.numpy())) == 1.0 for layer in _masked_layers(masked))
    assert_same_outputs(masked(images, training=False), model(images, training=False), atol=1e-6)
    assert masked.count_params() - model.count_params() == sum(
        layer.mask_score.shape[0] for layer in _masked_layers(masked))


def test_step_has_identity_and_normalised_straight_through_gradients(digit_batches):
    score = tf.Variable([-1.0, 0.0, 0.5, 2.0])
    upstream = tf.constant([3.0, -1.0, 0.5, 0.0])
    with tf.GradientTape(persistent=True) as tape:
        plain = scl.step_ste(score)
        normalised = scl.step_ste(score, normalise=True)
        plain_loss, normalised_loss = tf.reduce_sum(plain * upstream), tf.reduce_sum(normalised * upstream)
    np.testing.assert_array_equal(plain.numpy(), [0, 0, 1, 1])
    np.testing.assert_allclose(tape.gradient(plain_loss, score).numpy(), upstream.numpy())
    grad = tape.gradient(normalised_loss, score).numpy()
    np.testing.assert_allclose(grad, upstream.numpy() / np.sqrt(np.mean(upstream.numpy() ** 2)), rtol=1e-5)

    images = digit_batches(SHAPE, 8)
    masked = scl.attach_masks(_resnet8(images))
    # every mask of the shortcut off; the stream it reads is still read by stack3_conv1
    off = masked.get_layer("stack3_shortcut")
    _set_scores(off, -np.ones(off.mask_score.shape))
    layers = _masked_layers(masked)
    labels = tf.one_hot(np.arange(8) % 10, 10)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(keras.losses.categorical_crossentropy(labels, masked(images, training=True)))
    grads = tape.gradient(loss, [layer.mask_score for layer in layers])
    for layer, g in zip(layers, grads):
        assert np.count_nonzero(g.numpy()) > 0, layer.name  # switched-off masks still learn
        np.testing.assert_allclose(np.sqrt(np.mean(g.numpy() ** 2)), 1.0, rtol=1e-3)


def test_connection_count_is_strength_times_live_fraction(digit_batches):
    images = digit_batches(SHAPE, 4)
    model = _resnet8(images)
    strength = 0.4

    def penalty(masked):
        masked(images[:1])
        return sum(float(loss) for loss in masked.losses)

    weight_decay = sum(float(x) for x in model.losses)  # the kernels' own L2 terms
    assert penalty(scl.attach_masks(model)) == pytest.approx(weight_decay, rel=1e-5)  # strength 0
    masked = scl.attach_masks(model, strength=strength)
    assert penalty(masked) - weight_decay == pytest.approx(strength, rel=1e-4)
    layer = masked.get_layer("stack3_conv2_conv")  # 3x3 conv, 64 filters, reads 64 channels
    _set_scores(layer, np.where(np.arange(64) < 16, -1.0, 1.0))
    # every masked kernel of resnet8 reads only prunable channels: all its weights can be cut
    total = sum(masked_layer.kernel.numpy().size for masked_layer in _masked_layers(masked))
    assert penalty(masked) - weight_decay == pytest.approx(strength * (1 - 16 * 9 * 64 / total), rel=1e-4)


def test_fixed_inputs_stay_and_a_set_keeps_its_best_channel():
    model = _concat_model()
    images = np.random.default_rng(0).normal(size=(4, 8, 8, 2)).astype("float32")
    graph = analyse(model)
    masked = scl.attach_masks(model, graph)
    b = masked.get_layer("b")
    assert b.channel_index == [-1, -1, 0, 1, 2, 3] and type(b).__name__ == "MaskedSeparableConv2D"
    _set_scores(b, [-0.5, -0.1, -0.3, -0.2])  # every prunable input of b off; the input stays
    expected = model.get_layer("b")
    weights = expected.get_weights()
    weights[0][:, :, 2:] = 0.0
    expected.set_weights(weights)
    assert_same_outputs(masked(images), model(images), atol=1e-5)

    removed = scl.learned_channels(masked, graph)
    assert len(removed) == 3  # a's set would be empty: its highest score (-0.1) stays
    assert graph.roots(graph.layer_out["a"])[1] not in removed
    small = scl.export(masked, model, graph)
    assert small.get_layer("a").filters == 1 and small.get_layer("b").depthwise_kernel.shape[2] == 3
    assert_same_outputs(small(images), masked(images), atol=1e-5)


def test_export_with_some_readers_off_matches_the_masked_model(digit_batches):
    images = digit_batches(SHAPE, 8)
    model = _resnet8(images)
    graph = analyse(model)
    masked = scl.attach_masks(model, graph)
    rng = np.random.default_rng(1)
    for layer in _masked_layers(masked):
        _set_scores(layer, np.where(rng.random(layer.mask_score.shape) < 0.4, -1.0, 1.0))
    removed = scl.learned_channels(masked, graph)
    # stack2's stream is read by stack3_conv1 and stack3_shortcut: it goes where both agree
    stream = set(graph.roots(graph.layer_out["stack2_shortcut"]))
    both_off = {root for j, root in enumerate(scl.readers(graph)["stack3_conv1_conv"][1])
                if masked.get_layer("stack3_conv1_conv").mask()[j] == 0} & \
        {root for j, root in enumerate(scl.readers(graph)["stack3_shortcut"][1])
         if masked.get_layer("stack3_shortcut").mask()[j] == 0}
    assert stream & set(removed) == both_off and both_off
    small = scl.export(masked, model, graph)
    assert small.count_params() < model.count_params()
    assert len(analyse(small).channels) == len(graph.channels) - len(removed)
    assert_same_outputs(small(images, training=False), masked(images, training=False), atol=1e-5)


def test_masked_model_round_trips_through_keras_file(digit_batches, tmp_path):
    images = digit_batches(SHAPE, 4)
    masked = scl.attach_masks(_resnet8(images), strength=0.3, init=0.5)
    layer = masked.get_layer("stack1_conv2_conv")
    _set_scores(layer, np.linspace(-1, 1, layer.mask_score.shape[0]))
    path = tmp_path / "masked.keras"
    masked.save(path)
    loaded = keras.models.load_model(path)
    assert_same_outputs(loaded(images, training=False), masked(images, training=False), atol=1e-6)
    again = loaded.get_layer("stack1_conv2_conv")
    assert type(again) is scl.MaskedConv2D and again.score_init == 0.5
    np.testing.assert_array_equal(again.mask_score.numpy(), layer.mask_score.numpy())
    assert sum(float(x) for x in loaded.losses) == pytest.approx(sum(float(x) for x in masked.losses))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """resnet8 on digits for one epoch (22 steps) with no penalty and with a strong one."""
    digits = data.load("digits", image_shape=SHAPE)
    model = kerasnets.create_model("resnet8", input_shape=SHAPE, classes=10)
    runs = {}
    for strength in (0.0, 0.5):
        out = str(tmp_path_factory.mktemp(f"scl_{strength}"))
        runs[strength] = (*scl.train(model, digits, out, epochs=1, strength=strength, verbose=0,
                                     config={"batch_size": 64, "augment": []}), out)
    return model, runs


def test_training_with_a_strong_penalty_removes_more_channels(trained):
    model, runs = trained
    _, free, _ = runs[0.0]
    pruned, info, out = runs[0.5]
    assert info["channels_before"] == len(analyse(model).channels) == 224
    assert info["channels_removed"] > free["channels_removed"] + 20
    assert info["params_after"] == pruned.count_params() < free["params_after"] < model.count_params()
    assert len(analyse(pruned).channels) == info["channels_after"]
    assert os.path.exists(os.path.join(out, "pruned.keras")) and len(info["history"]["loss"]) == 1
    # the accuracy reported is the pruned model's own on the test split, not the model before surgery
    digits = data.load("digits", image_shape=SHAPE)
    assert info["accuracy"] == train_mod.evaluate(pruned, digits) and info["recalibrated_batches"] == 20


def test_exported_model_matches_masked_model_and_runs_on_micro(trained, digit_batches):
    model, runs = trained
    pruned, info, out = runs[0.5]
    masked = keras.models.load_model(os.path.join(out, "masked.keras"))  # trained, recalibrated
    graph = analyse(model)
    assert len(scl.learned_channels(masked, graph)) == info["channels_removed"]
    images = digit_batches(SHAPE, 8)
    small = scl.export(masked, model, graph)
    expected = masked(images, training=False)
    assert_same_outputs(small(images, training=False), expected, atol=1e-4)
    assert_same_outputs(pruned(images, training=False), expected, atol=1e-4)

    tflite = convert.export(small, "int8", images)
    summary = convert.graph_summary(tflite)
    assert not [op for op in summary["ops"] if op.startswith(("FLEX", "CUSTOM"))], summary["ops"]
    x8 = convert.quantize_input(images, convert.litert_interpreter(tflite).get_input_details()[0])
    micro = arena.run_micro(tflite, x8)
    assert micro.shape == (8, 10)
    np.testing.assert_array_equal(micro, convert.run_litert(tflite, x8, reference=True))


class _Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.dense = L.Dense(2)

    def call(self, x):
        return self.dense(x)


def test_bad_input_is_refused(digit_batches, tmp_path):
    images = digit_batches(SHAPE, 2)
    model = _resnet8(images)
    with pytest.raises(ValueError, match="strength"):
        scl.attach_masks(model, strength=-0.1)
    with pytest.raises(ValueError, match="init"):
        scl.attach_masks(model, init=0.0)
    with pytest.raises(TypeError, match="functional"):
        scl.attach_masks(_Subclassed())
    with pytest.raises(ValueError, match="strength"):
        scl.train(model, None, str(tmp_path), epochs=1, strength=-1.0)
    with pytest.raises(ValueError, match="epochs"):
        scl.train(model, None, str(tmp_path), epochs=0, strength=0.1)
    graph = analyse(model)
    with pytest.raises(ValueError, match="attach_masks"):
        scl.learned_channels(model, graph)  # not a masked model
    with pytest.raises(ValueError, match="graph"):
        scl.attach_masks(_concat_model(), graph)  # the graph of another model
