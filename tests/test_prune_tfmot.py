"""TFMOT compression through the public API on real models: magnitude and 2:4 pruning, weight
clustering, sparsity/cluster-preserving QAT, XNNPACK pruning, and wrapping every zoo model."""
import numpy as np
import pytest
import tf_keras as keras

import kerasnets
from kerasnets.pipelines import convert, data, quantize, train
from kerasnets.pipelines.prune import clustering, sparsity
from conftest import small_input_shape

SHAPE = (32, 32, 1)
MODELS = kerasnets.list_models()
# Wrapping takes ~40-60 ms of CPU per layer, so every test run wraps these (each ~1-2.5 s,
# together covering plain convs, the zoo's custom layers — hard activations, squeeze-excite,
# CondenseNet's learned group convs — and DepthwiseConv2D); `-m slow` wraps the whole registry.
WRAP_IN_CI = ("resnet8", "vgg16_cifar", "mobilenet_v1_100", "mobilenet_v3_small_100",
              "condensenext_cifar")


@pytest.fixture(scope="module")
def digits():
    x, y = data.digits_images(SHAPE, 128)
    return x, keras.utils.to_categorical(y, 10)


def _resnet8():
    return kerasnets.create_model("resnet8", input_shape=SHAPE, classes=10)


@pytest.fixture(scope="module")
def resnet8():
    return _resnet8()


def _steps(model, digits, steps, callbacks=()):
    """A few optimiser steps on real digits (enough for masks, clusters and QAT to act)."""
    x, y = digits
    model.compile(keras.optimizers.SGD(0.01, momentum=0.9), "categorical_crossentropy")
    model.fit(x, y, batch_size=32, epochs=1, steps_per_epoch=steps, verbose=0, callbacks=list(callbacks))
    return model


def _zeros(model):
    """{layer: boolean mask of zero weights} over the kernels TFMOT prunes (QAT names unwrapped)."""
    found = {}
    for layer in model.layers:
        inner = getattr(layer, "layer", layer)
        for weight in sparsity.prunable_weights(inner, layer):
            found[inner.name] = weight.numpy() == 0
    return found


@pytest.fixture(scope="module")
def pruned_stripped(digits):
    """resnet8 pruned to 60% along a polynomial schedule (0 -> 0.6 over two steps), stripped."""
    pruned = sparsity.prune_magnitude(_resnet8(), sparsity=0.6, schedule="polynomial", end_step=2,
                                      frequency=1)
    return sparsity.strip(_steps(pruned, digits, 2, sparsity.callbacks()))


def test_magnitude_pruning_trains_through_fit_and_exports_sparse_int8(tmp_path):
    dataset = data.load("digits", image_shape=SHAPE)
    dense = _resnet8()
    result = train.fit(lambda: sparsity.prune_magnitude(dense, sparsity=0.5, frequency=5), dataset,
                       str(tmp_path), config={"epochs": 1, "batch_size": 64, "lr": 0.01, "augment": []},
                       extra_callbacks=sparsity.callbacks(str(tmp_path / "pruning")), verbose=0)
    stripped = sparsity.strip(result["model"])
    assert not any(isinstance(layer, sparsity.PruneLowMagnitude) for layer in stripped.layers)
    assert [layer.name for layer in stripped.layers] == [layer.name for layer in dense.layers]
    report = sparsity.sparsity_report(stripped)
    assert set(report["layers"]) == {l.name for l in dense.layers if sparsity.prunable_weights(l)}
    assert min(report["layers"].values()) >= 0.48, report["layers"]
    assert sparsity.sparsity_report(dense)["overall"] < 0.01  # the caller's model stays dense

    images = data.representative_images(dataset, 32)
    sparse_tflite = convert.export(stripped, "int8", images)
    dense_tflite = convert.export(dense, "int8", images)
    interpreter = convert.litert_interpreter(sparse_tflite)
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    outputs = convert.run_litert(sparse_tflite, convert.quantize_input(images[:8], inp))
    assert outputs.shape == (8, 10) and outputs.dtype == np.int8 and out["dtype"] == np.int8
    filters = [interpreter.get_tensor(t["index"]) for t in interpreter.get_tensor_details()
               if t["dtype"] == np.int8 and len(t["shape"]) == 4 and t["shape"][0] > 1
               and t["name"] != inp["name"]]
    zero_fraction = sum(int((f == 0).sum()) for f in filters) / sum(f.size for f in filters)
    assert zero_fraction >= 0.48, "the int8 conv filters lost the sparsity"
    assert len(sparse_tflite) > 0.9 * len(dense_tflite)  # zeros are stored: only gzip shows them
    assert sparsity.compressed_size(sparse_tflite) < 0.85 * sparsity.compressed_size(dense_tflite)


def test_two_by_four_pattern_holds_after_strip(digits):
    dense = _resnet8()
    pruned = _steps(sparsity.prune_magnitude(dense, sparsity_m_by_n=(2, 4), frequency=1), digits, 2,
                    sparsity.callbacks())
    stripped = sparsity.strip(pruned)
    assert sparsity.verify_m_by_n(stripped, 2, 4)
    assert not sparsity.verify_m_by_n(dense, 2, 4)
    per_layer = sparsity.sparsity_report(stripped)["layers"]
    # the stem has one input channel: its 1-wide groups keep their weight; the rest lose half
    assert all(v >= 0.49 for name, v in per_layer.items() if name != "stem_conv"), per_layer


def test_clustering_leaves_at_most_n_values_per_kernel(digits):
    dense = _resnet8()
    assert clustering.unique_weights_report(dense)["max"] > 100
    clustered = _steps(clustering.cluster(dense, clusters=8), digits, 2)
    assert clustering.unique_weights_report(clustered)["max"] <= 8  # read through the wrappers
    stripped = clustering.strip(clustered)
    report = clustering.unique_weights_report(stripped)
    assert report["max"] <= 8 and len(report["layers"]) == 10, report


def test_pqat_keeps_the_zeros_that_plain_qat_loses(pruned_stripped, digits):
    before = _zeros(pruned_stripped)
    assert sparsity.sparsity_report(pruned_stripped)["overall"] == pytest.approx(0.6, abs=0.02)
    kept = _zeros(_steps(clustering.pqat(pruned_stripped), digits, 3))
    assert set(kept) == set(before)
    for name, mask in before.items():
        assert kept[name][mask].all(), f"{name}: PQAT revived pruned weights"
    plain = _steps(quantize.quantize_model(pruned_stripped), digits, 3)
    assert sparsity.sparsity_report(plain)["overall"] < 0.1  # the contrast: plain QAT fills them in


def test_cqat_keeps_the_clusters_of_each_channel(digits):
    clustered = clustering.strip(_steps(clustering.cluster(_resnet8(), clusters=8), digits, 2))
    # one fit call: TFMOT's per-channel cluster graph takes ~25 s of CPU to build each time
    qat = _steps(clustering.cqat(clustered), digits, 2)
    report = clustering.unique_weights_report(clustering.strip_cqat(qat))
    assert report["max_per_channel"] <= 8, report["per_channel"]
    assert report["max"] > 8  # centroids train per output channel, as int8 quantises them


@pytest.mark.slow
def test_pcqat_keeps_zeros_and_clusters(pruned_stripped, digits):
    clustered = clustering.strip(_steps(clustering.cluster(pruned_stripped, clusters=8,
                                                           preserve_sparsity=True), digits, 2))
    zeros = _zeros(clustered)
    assert sparsity.sparsity_report(clustered)["overall"] >= 0.58
    stripped = clustering.strip_cqat(_steps(clustering.pcqat(clustered), digits, 2))
    assert clustering.unique_weights_report(stripped)["max_per_channel"] <= 8
    kept = _zeros(stripped)
    assert all(kept[name][mask].all() for name, mask in zeros.items())


def test_xnnpack_pruning_needs_its_layout_and_prunes_only_1x1_convs():
    with pytest.raises(ValueError, match="explicit_padding"):
        sparsity.prune_for_xnnpack(_resnet8())
    model = kerasnets.create_model("mobilenet_v2_100", input_shape=small_input_shape("mobilenet_v2_100"),
                                   classes=10)
    with pytest.raises(ValueError, match="does not fit XNNPACK"):
        sparsity.prune_for_xnnpack(model)
    padded = sparsity.explicit_padding(model)
    assert padded.output_shape == model.output_shape and padded.count_params() == model.count_params()
    assert not [l for l in padded.layers if getattr(l, "padding", "") == "same" and l.strides != (1, 1)]
    pruned = sparsity.prune_for_xnnpack(padded, sparsity=0.8)
    wrapped = [l.layer for l in pruned.layers if isinstance(l, sparsity.PruneLowMagnitude)]
    one_by_one = [l for l in padded.layers if type(l) is keras.layers.Conv2D and l.kernel_size == (1, 1)]
    assert len(wrapped) == len(one_by_one) > 30
    assert all(l.kernel_size == (1, 1) for l in wrapped)


def _wrap_params():
    return [pytest.param(n, marks=() if n in WRAP_IN_CI else pytest.mark.slow) for n in MODELS]


@pytest.mark.parametrize("name", _wrap_params())
def test_magnitude_wrap_covers_every_prunable_layer_of_every_model(name):
    model = kerasnets.create_model(name, input_shape=small_input_shape(name), classes=10)
    pruned = sparsity.prune_magnitude(model, sparsity=0.5)
    wrapped = {l.layer.name for l in pruned.layers if isinstance(l, sparsity.PruneLowMagnitude)}
    assert wrapped and wrapped == {l.name for l in model.layers if sparsity.prunable_weights(l)}
    assert not any(isinstance(l, sparsity.PruneLowMagnitude) for l in model.layers)
    copies = {getattr(l, "layer", l).name: getattr(l, "layer", l) for l in pruned.layers}
    for original in model.layers:  # a copy with the same weights, the caller's model untouched
        copy = copies[original.name]
        assert copy is not original and type(copy) is type(original)
        assert all(np.array_equal(a, b) for a, b in zip(original.get_weights(), copy.get_weights()))


def test_wrap_subset_names_are_registered():
    assert set(WRAP_IN_CI) <= set(MODELS)


class _Subclassed(keras.Model):
    def call(self, x):
        return x


@pytest.mark.parametrize("call, message", [
    (lambda m: sparsity.prune_magnitude(m, sparsity=1.0), r"sparsity must be .* \[0, 1\)"),
    (lambda m: sparsity.prune_magnitude(m, sparsity=-0.1), r"sparsity must be"),
    (lambda m: sparsity.prune_magnitude(m, schedule="cubic"), r"schedule must be one of"),
    (lambda m: sparsity.prune_magnitude(m, schedule="polynomial"), r"end_step must be an integer"),
    (lambda m: sparsity.prune_magnitude(m, frequency=0), r"frequency must be"),
    (lambda m: sparsity.prune_magnitude(m, sparsity_m_by_n=(4, 2)), r"0 < m < n"),
    (lambda m: sparsity.prune_magnitude(m, sparsity_m_by_n=(2,)), r"pair \(m, n\)"),
    (lambda m: sparsity.prune_magnitude(m, sparsity_m_by_n=(2.0, 4)), r"two integers"),
    (lambda m: sparsity.prune_magnitude(m, sparsity=0.7, sparsity_m_by_n=(2, 4)), r"fixes the sparsity"),
    (lambda m: sparsity.prune_magnitude(m, exclude=["nope"]), r"exclude names layers \['nope'\]"),
    (lambda m: sparsity.prune_magnitude(_Subclassed()), r"functional"),
    (lambda m: sparsity.verify_m_by_n(m, 3, 3), r"0 < m < n"),
    (lambda m: sparsity.compressed_size(b""), r"non-empty"),
    (lambda m: clustering.cluster(m, clusters=1), r"clusters must be an integer >= 2"),
    (lambda m: clustering.cluster(m, init="best"), r"init must be one of"),
    (lambda m: clustering.pqat(sparsity.prune_magnitude(m)), r"strip"),
])
def test_bad_arguments_raise_value_errors_that_name_the_fix(call, message, resnet8):
    with pytest.raises(ValueError, match=message):
        call(resnet8)


def test_callbacks_add_summaries_only_with_a_log_dir(tmp_path):
    import tensorflow_model_optimization as tfmot

    assert [type(c) for c in sparsity.callbacks()] == [tfmot.sparsity.keras.UpdatePruningStep]
    assert [type(c) for c in sparsity.callbacks(str(tmp_path))] == [
        tfmot.sparsity.keras.UpdatePruningStep, tfmot.sparsity.keras.PruningSummaries]
