"""CondenseNet: learned group convolutions condense during training and `condense` turns the
trained model into the registered test-time structure with the same outputs and an int8 graph
that TFLite Micro runs exactly as LiteRT's reference kernels."""
import numpy as np
import pytest
import tf_keras as keras

import kerasnets
from kerasnets import condensenet as cn
from kerasnets.micro import arena
from kerasnets.pipelines import convert, quantize
from conftest import assert_same_outputs, calibrate_batchnorm, small_input_shape

TINY = cn.CondenseNetConfig(stages=(2, 2), growth=(8, 16))
TINY_SHAPE = (16, 16, 3)


def _tiny(condensing, **kwargs):
    args = dict(input_shape=TINY_SHAPE, classes=10, include_top=True, pooling=None,
                classifier_activation="linear", name="tiny")
    return cn.build_condensenet(TINY, condensing=condensing, **{**args, **kwargs})


def _trained_tiny(digit_batches, **kwargs):
    """A training-time tiny net with every condensing step done and informative BN statistics."""
    model = _tiny(True, **kwargs)
    cn.finish_condensation(model)
    images = digit_batches(TINY_SHAPE, 8)
    calibrate_batchnorm(model, images)
    return model, images


# The paper's FLOPs (Table 1 / the official README) and the digits it gives them to
PUBLISHED_FLOPS = {"condensenet50_cifar": (28.6e6, 0.1e6), "condensenet86_cifar": (65.8e6, 0.1e6),
                   "condensenet74_g4": (529e6, 1e6), "condensenet74_g8": (274e6, 1e6)}


@pytest.mark.parametrize("name", sorted(PUBLISHED_FLOPS))
def test_the_official_counter_gives_the_published_flops(name):
    """The registered structure, counted as the paper counts (ReLU and pooled elements on top of the
    multiply-adds), rounds to the published figure; its conv/linear part is the registered MACs."""
    model = kerasnets.create_model(name)
    published, digit = PUBLISHED_FLOPS[name]
    assert abs(cn.official_flops(model) - published) <= digit / 2
    assert kerasnets.profile(model)["macs"] == pytest.approx(kerasnets.model_info(name).macs, rel=1e-3)


def test_condensing_stages_follow_the_official_schedule():
    # C-1 equal steps over the first half of training
    assert [cn.condensing_stage(p, 4) for p in (0.0, 0.16, 1 / 6, 0.34, 0.49, 0.5, 1.0)] == [0, 0, 1, 2, 2, 3, 3]
    assert cn.condensing_stage(0.25, 8) == 3 and cn.condensing_stage(0.5, 8) == 7
    assert cn.condensing_stage(0.3, 1) == 0


def test_learned_group_conv_drops_the_weakest_inputs_of_each_group():
    layer = cn.LearnedGroupConv(4, groups=2, condense_factor=4)
    layer.build((None, 2, 2, 8))
    kernel = np.zeros((1, 1, 8, 4), np.float32)
    kernel[0, 0, :, 0::2] = np.arange(8)[:, None] + 1.0  # group 0: input i weighs i + 1
    kernel[0, 0, :, 1::2] = 8.0 - np.arange(8)[:, None]  # group 1: the reverse
    layer.kernel.assign(kernel)
    layer.advance_to(1)
    assert layer.group_inputs() == [[2, 3, 4, 5, 6, 7], [0, 1, 2, 3, 4, 5]]
    layer.advance_to(3)
    assert layer.is_condensed
    assert layer.group_inputs() == [[6, 7], [0, 1]]
    indices, grouped = cn.condensed_kernel(layer)
    assert indices == [6, 7, 0, 1]
    # condensed output g * 2 + t is training-time output g + 2 t
    np.testing.assert_array_equal(grouped[0, 0, :, 0], kernel[0, 0, [6, 7], 0])
    np.testing.assert_array_equal(grouped[0, 0, :, 3], kernel[0, 0, [0, 1], 3])


def test_condensed_model_matches_the_trained_model_and_the_registered_structure(digit_batches):
    model, images = _trained_tiny(digit_batches)
    condensed = cn.condense(model)
    assert_same_outputs(condensed(images, training=False), model(images, training=False))
    scratch = _tiny(False)
    assert [(l.name, type(l)) for l in condensed.layers] == [(l.name, type(l)) for l in scratch.layers]
    assert [w.shape for w in condensed.weights] == [w.shape for w in scratch.weights]
    # condensing keeps 1/C of every learned 1x1 kernel and half of the classifier's inputs
    dropped = sum(l.kernel.shape.num_elements() * (1 - 1 / l.condense_factor)
                  for l in model.layers if isinstance(l, cn.LearnedGroupConv))
    dropped += model.get_layer("head_fc").kernel.shape.num_elements() // 2
    assert kerasnets.profile(condensed)["params"] == model.count_params() - dropped - \
        sum(w.shape.num_elements() for w in model.non_trainable_weights)


def test_condense_needs_every_stage_done(digit_batches):
    model = _tiny(True)
    with pytest.raises(ValueError, match="finish_condensation"):
        cn.condense(model)


def test_schedule_condenses_during_fit_under_the_group_lasso_penalty(digit_batches):
    model = _tiny(True, group_lasso=1e-3)
    penalties = [float(loss) for loss in model.losses]
    assert len(penalties) == 4 and min(penalties) > 0  # one per learned group conv
    images = digit_batches(TINY_SHAPE, 16)
    labels = np.arange(16) % 10
    model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    stages = []
    probe = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: stages.append(int(model.get_layer("block2_layer2_1_lgc").stage.numpy())))
    model.fit(images, labels, batch_size=4, epochs=4, verbose=0,
              callbacks=[cn.CondensationSchedule(epochs=4), probe])
    assert stages == [1, 2, 3, 3]  # 4 steps per epoch: stage floor(6 p), the last from p = 1/2
    assert all(layer.is_condensed for layer in cn.condensing_layers(model))
    assert sum(float(loss) for loss in model.losses) == 0.0  # the penalty stops at the last stage
    assert len(model.get_layer("head_fc").kept_features()) == model.get_layer("head_fc").kernel.shape[0] // 2


def test_training_model_keeps_masks_through_a_keras_file(digit_batches, tmp_path):
    model, images = _trained_tiny(digit_batches, group_lasso=1e-4)
    path = tmp_path / "tiny.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert_same_outputs(loaded(images, training=False), model(images, training=False))
    assert all(layer.is_condensed for layer in cn.condensing_layers(loaded))
    assert loaded.get_layer("block1_layer1_1_lgc").group_lasso == 1e-4


def test_qat_wraps_the_learned_group_conv(digit_batches):
    inputs = keras.Input(TINY_SHAPE)
    x = keras.layers.Conv2D(16, 3, padding="same", use_bias=False)(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = cn.LearnedGroupConv(16, groups=4, name="lgc")(x)
    outputs = keras.layers.Dense(10)(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    cn.finish_condensation(model)
    qat = quantize.quantize_model(model)
    wrapper = qat.get_layer("quant_lgc")
    assert isinstance(wrapper.layer, cn.LearnedGroupConv)
    assert any("kernel" in w.name and "min" in w.name for w in wrapper.weights)  # per-channel range
    # QAT training keeps dropped connections dropped: their masked weights get no gradient
    kernel = model.get_layer("lgc").kernel.numpy()
    images = digit_batches(TINY_SHAPE, 4)
    qat.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    qat.fit(images, np.ones((4, 10)), verbose=0)
    after, mask = wrapper.layer.kernel_variable.numpy(), wrapper.layer.mask.numpy()
    assert np.array_equal(after[mask == 0], kernel[mask == 0])
    assert not np.array_equal(after[mask == 1], kernel[mask == 1])
    assert cn.condensing_layers(qat)[0] is wrapper.layer


def _int8_litert_and_micro(model, images):
    tflite = convert.to_int8(model, images)
    summary = convert.graph_summary(tflite)
    assert not [op for op in summary["ops"] if op.startswith(("FLEX", "CUSTOM"))]
    assert summary["max_rank"] <= 4
    x8 = convert.quantize_input(images, convert.litert_interpreter(tflite).get_input_details()[0])
    return summary["ops"], convert.run_litert(tflite, x8, reference=True), arena.run_micro(tflite, x8)


def test_condensed_model_runs_int8_in_tflite_micro_without_gather(digit_batches):
    model, images = _trained_tiny(digit_batches)
    condensed = cn.condense(model)
    ops, reference, micro = _int8_litert_and_micro(condensed, images)
    # the Index and Permute are folded into the 1x1 convs' and the classifier's weights
    assert {"CONV_2D", "FULLY_CONNECTED"} <= set(ops) and not {"GATHER", "TRANSPOSE"} & set(ops), ops
    assert len(np.unique(reference)) > 4
    # the Dense head may round a near-tie 1 LSB apart (LiteRT rounds once, TFLite Micro twice);
    # everything up to it must match bit for bit
    assert np.abs(reference.astype(int) - micro).max() <= 1
    features = keras.Model(condensed.input, condensed.get_layer("head_pool").output)
    ops, reference, micro = _int8_litert_and_micro(features, images)
    assert np.array_equal(reference, micro)


def test_the_folded_index_equals_gather_grouped_conv_and_permute(digit_batches):
    """IndexedGroupConv against the layers it replaces, on an index that repeats and drops channels."""
    from kerasnets.blocks import channel_shuffle

    images = digit_batches(TINY_SHAPE, 4)
    inputs = keras.Input(TINY_SHAPE)
    x = keras.layers.Conv2D(8, 3, padding="same")(inputs)
    indices = [7, 0, 0, 3, 5, 5, 1, 7]  # 4 groups of 2: channel 0 in two groups, 2, 4 and 6 in none
    folded = cn.IndexedGroupConv(12, groups=4, indices=indices, use_bias=False, name="folded")
    conv = keras.layers.Conv2D(12, 1, groups=4, use_bias=False)
    old = channel_shuffle(conv(cn.ChannelGather(indices)(x)), 4, name="shuffle")
    model = keras.Model(inputs, [folded(x), old])
    conv.set_weights(folded.get_weights())
    new_out, old_out = model(images)
    assert_same_outputs(new_out, old_out)
    tflite = convert.export(keras.Model(inputs, model.outputs[0]), "int8", images)
    assert set(convert.graph_summary(tflite)["ops"]) == {"CONV_2D"}


def test_variant_arguments_build_the_training_model():
    model = cn.condensenet_train("condensenet50_cifar", input_shape=(8, 8, 3))
    assert model.name == "condensenet50_cifar"
    assert len([l for l in model.layers if isinstance(l, cn.LearnedGroupConv)]) == 24
    assert isinstance(model.get_layer("head_fc"), cn.CondensingDense)
    with pytest.raises(TypeError, match="condensing and group_lasso"):
        kerasnets.create_model("condensenet50_cifar", width=2)


CONDENSED_PAPERS = ("arXiv 1711.09224", "arXiv 2106.14102")  # CondenseNet; EffCNet / CondenseNeXt
CONDENSED_MODELS = [n for n in kerasnets.list_models() if kerasnets.model_info(n).paper in CONDENSED_PAPERS]


@pytest.mark.parametrize("name", CONDENSED_MODELS)
def test_every_condensed_model_has_a_gather_form_with_its_outputs_and_size(name):
    model = kerasnets.create_model(name, input_shape=small_input_shape(name), classifier_activation="linear")
    images = np.random.default_rng(0).uniform(0, 255, (4,) + model.input_shape[1:]).astype("float32")
    calibrate_batchnorm(model, images)
    gathered = cn.index_as_gather(model)
    indexed = cn.indexed_layers(model)
    assert indexed and len([l for l in gathered.layers if isinstance(l, cn.ChannelGather)]) == len(indexed)
    assert not cn.indexed_layers(gathered)
    assert_same_outputs(gathered(images), model(images))
    size, gathered_size = kerasnets.profile(model), kerasnets.profile(gathered)
    assert (gathered_size["params"], gathered_size["macs"]) == (size["params"], size["macs"])


def test_the_gather_form_runs_in_tflite_micro_as_the_folded_form(digit_batches):
    model, images = _trained_tiny(digit_batches)
    folded, gathered = cn.condense(model), cn.condense(model, index="gather")
    assert_same_outputs(gathered(images), folded(images))
    ops, reference, micro = _int8_litert_and_micro(gathered, images)
    assert {"GATHER", "TRANSPOSE"} <= set(ops), ops
    assert len(np.unique(reference)) > 4
    assert np.abs(reference.astype(int) - micro).max() <= 1  # the Dense head's near-ties, as folded
    # the same int8 arithmetic: a QAT model of each form, from the same float model and calibration,
    # converts to int8 models with the same outputs
    outputs = []
    for form in (folded, gathered):
        qat = quantize.quantize_model(form, calibration=images)
        tflite = convert.export(qat, "int8", images)
        outputs.append(convert.run_litert(tflite, convert.quantize_input(
            images, convert.litert_interpreter(tflite).get_input_details()[0]), reference=True).astype(int))
    assert len(np.unique(outputs[0])) > 4 and np.abs(outputs[0] - outputs[1]).max() <= 1


def test_the_gather_form_stores_each_condensed_kernel_once():
    """The folded 1x1 convs hold `groups` copies' worth of zeros; the gather form's int8 file drops
    them (a net as small as the tiny one above gains nothing: the GATHER, TRANSPOSE and RESHAPE
    tensors cost more than its kernels' zeros)."""
    model = kerasnets.create_model("effcnet_cifar", classifier_activation="linear")
    images = np.random.default_rng(0).uniform(0, 255, (8,) + model.input_shape[1:]).astype("float32")
    calibrate_batchnorm(model, images)
    folded_bytes = len(convert.to_int8(model, images))
    gathered_bytes = len(convert.to_int8(cn.index_as_gather(model), images))
    indexed = cn.indexed_layers(model)
    zeros = sum(l.kernel.shape.num_elements() * (l.groups - 1)
                for l in indexed if isinstance(l, cn.IndexedGroupConv))  # int8: a byte each
    # what the gather form adds: its int32 indices and ~1.4 KiB of tensors per layer (measured:
    # effcnet_cifar 155,520 -> 137,728 bytes for 40,320 zeros, condensenet50_cifar 618 -> 365 KiB)
    added = sum(4 * len(l.indices) + 2048 for l in indexed)
    assert gathered_bytes < folded_bytes - (zeros - added), (folded_bytes, gathered_bytes, zeros, added)


def test_the_gather_form_needs_a_condensed_float_model(digit_batches):
    model, images = _trained_tiny(digit_batches)
    with pytest.raises(ValueError, match="`index` must be one of"):
        cn.condense(model, index="scatter")
    with pytest.raises(ValueError, match="has no IndexedGroupConv"):
        cn.index_as_gather(model)  # the training-time model
    with pytest.raises(TypeError, match="functional"):
        cn.index_as_gather(keras.Sequential([keras.layers.Dense(2)]))
    qat = quantize.quantize_model(cn.condense(model), calibration=images)
    with pytest.raises(ValueError, match="needs the float model"):
        cn.index_as_gather(qat)
