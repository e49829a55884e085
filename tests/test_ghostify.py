"""ghostify: C-Ghost modules swapped into registry models by rebuilding their functional graph."""
import numpy as np
import pytest
import tf_keras as keras

import kerasnets
from kerasnets import layers as knl
from kerasnets.ghostify import REPLACE, ghost_plan, ghostify
from kerasnets.micro import arena
from kerasnets.pipelines import convert, quantize
from conftest import assert_same_outputs, calibrate_batchnorm

L = keras.layers


@pytest.fixture(scope="module")
def resnet20():
    return kerasnets.create_model("resnet20_cifar")


def _layer_types(model):
    return sorted(type(layer).__name__ for layer in model.layers)


def test_ghostified_resnet20_has_half_the_params_and_the_same_outputs_shape(resnet20):
    params = resnet20.count_params()
    ghost = ghostify(resnet20)
    assert ghost.output_shape == resnet20.output_shape and ghost.input_shape == resnet20.input_shape
    assert 0.45 < ghost.count_params() / params < 0.55
    assert resnet20.count_params() == params, "the original model must stay untouched"
    plan = ghost_plan(resnet20)
    kept = {name: reason for name, reason in plan.items() if reason != REPLACE}
    assert kept == {"stage2_block1_shortcut_conv": "1x1 strided projection shortcut",
                    "stage3_block1_shortcut_conv": "1x1 strided projection shortcut"}
    assert sum(reason == REPLACE for reason in plan.values()) == 19  # stem + 18 block convs
    for name in ("head_fc", "stage2_block1_shortcut_conv", "stage2_block1_shortcut_bn"):
        for old, new in zip(resnet20.get_layer(name).get_weights(), ghost.get_layer(name).get_weights()):
            np.testing.assert_array_equal(old, new)


def test_ghostify_reproduces_the_registered_ghost_resnet56():
    ghost = ghostify(kerasnets.create_model("resnet56_cifar"))
    reference = kerasnets.create_model("ghost_resnet56_cifar")
    ours, theirs = kerasnets.profile(ghost), kerasnets.profile(reference)
    assert (ours["params"], ours["macs"]) == (theirs["params"], theirs["macs"])
    assert _layer_types(ghost) == _layer_types(reference)


def test_untouched_part_of_the_graph_computes_the_same(resnet20, digit_batches):
    images = digit_batches(resnet20.input_shape[1:], 4)
    calibrate_batchnorm(resnet20, images)
    ghost = ghostify(resnet20, layers=["stage3_block3_conv2_conv"])
    assert ghost_plan(resnet20, layers=["stage3_block3_conv2_conv"])["stem_conv"] == "not selected"
    before = "stage3_block3_conv1_relu"  # the input of the only replaced unit
    expected = keras.Model(resnet20.input, resnet20.get_layer(before).output)(images, training=False)
    got = keras.Model(ghost.input, ghost.get_layer(before).output)(images, training=False)
    assert_same_outputs(got, expected)
    assert "stage3_block3_conv2_conv" not in [layer.name for layer in ghost.layers]
    assert ghost.get_layer("stage3_block3_conv2_ghost_primary_conv").kernel_size == (3, 3)


def test_selected_layers_may_name_a_projection_shortcut(resnet20):
    ghost = ghostify(resnet20, layers=["stage2_block1_shortcut_conv"])
    primary = ghost.get_layer("stage2_block1_shortcut_ghost_primary_conv")
    assert primary.kernel_size == (1, 1) and primary.strides == (2, 2) and primary.filters == 16
    assert ghost.count_params() < resnet20.count_params()


def test_ghostified_resnet20_passes_qat_int8_and_tflite_micro(digit_batches, tmp_path):
    # Pooled features, no Dense head: ghostify rewrites the body, and TFLite Micro's int8
    # FULLY_CONNECTED rounds near-ties 1 LSB away from LiteRT's reference kernel on a few
    # outputs in a thousand, which would make this check fail at random for another reason.
    base = kerasnets.create_model("resnet20_cifar", include_top=False, pooling="avg")
    model = ghostify(base)
    assert model.output_shape == (None, 64)
    images = digit_batches(model.input_shape[1:], 8)
    calibrate_batchnorm(model, images)
    expected = model(images[:2], training=False)
    path = tmp_path / "ghost.keras"
    model.save(path)
    assert_same_outputs(keras.models.load_model(path)(images[:2], training=False), expected)

    qat = quantize.quantize_model(model)
    assert np.isfinite(qat(images[:2], training=False).numpy()).all()

    tflite = convert.to_int8(model, images)
    summary = convert.graph_summary(tflite)
    assert "DEPTHWISE_CONV_2D" in summary["ops"]
    assert not [op for op in summary["ops"] if op.startswith(("FLEX", "CUSTOM"))], summary["ops"]
    assert summary["max_rank"] <= 4
    input_details = convert.litert_interpreter(tflite, reference=True).get_input_details()[0]
    x8 = convert.quantize_input(images, input_details)
    reference = convert.run_litert(tflite, x8, reference=True)
    assert np.array_equal(reference, arena.run_micro(tflite, x8))
    assert len(np.unique(reference)) > 4


def _mixed_model():
    """One conv of each kind the plan must tell apart."""
    inputs = L.Input((16, 16, 3), name="input")
    x = L.Conv2D(32, 3, padding="same", use_bias=False, name="unit_conv")(inputs)
    x = L.BatchNormalization(name="unit_bn")(x)
    x = L.ReLU(6.0, name="unit_relu6")(x)
    x = L.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = L.Conv2D(32, 1, groups=4, name="grouped")(x)
    x = L.Conv2D(32, 3, padding="valid", name="valid")(x)
    x = L.BatchNormalization(name="valid_bn")(x)
    x = L.Conv2D(8, 1, name="narrow")(x)
    x = L.BatchNormalization(name="narrow_bn")(x)
    x = knl.HardSwish(name="narrow_hswish")(x)
    x = L.Conv2D(32, 3, padding="same", name="no_bn")(x)
    pooled = L.GlobalAveragePooling2D(keepdims=True, name="pool")(x)
    pooled = L.Conv2D(32, 1, name="on_pooled")(pooled)
    pooled = L.BatchNormalization(name="on_pooled_bn")(pooled)
    return keras.Model(inputs, L.Add(name="add")([x, pooled]), name="mixed")


def test_plan_names_why_each_conv_is_kept():
    plan = ghost_plan(_mixed_model())
    assert plan["unit_conv"] == REPLACE
    assert plan["dw"].startswith("depthwise")
    assert plan["grouped"].startswith("grouped")
    assert plan["valid"].startswith("'valid' padding")
    assert plan["narrow"].startswith("fewer than min_filters=16")
    assert plan["no_bn"] == "not followed by its own BatchNormalization"
    assert plan["on_pooled"].startswith("acts on a 1x1 map")
    assert ghost_plan(_mixed_model(), min_filters=8)["narrow"] == REPLACE


def test_activations_move_into_the_module():
    ghost = ghostify(_mixed_model(), layers=["unit_conv", "narrow"])
    names = [layer.name for layer in ghost.layers]
    assert "unit_ghost_primary_relu6" in names and "unit_ghost_cheap_relu6" in names
    assert "narrow_ghost_cheap_hard_swish" in names
    assert not {"unit_relu6", "unit_bn", "narrow_hswish", "narrow_bn"} & set(names)
    assert ghost.output_shape == (None, 14, 14, 32)


def test_shared_layers_stay_shared():
    inputs = L.Input((8, 8, 16), name="input")
    shared = L.Conv2D(16, 3, padding="same", use_bias=False, name="shared")
    left = L.BatchNormalization(name="left_bn")(shared(inputs))
    right = L.BatchNormalization(name="right_bn")(shared(L.ReLU(name="pre")(inputs)))
    x = L.Add(name="add")([left, right])
    x = L.Conv2D(32, 3, padding="same", use_bias=False, name="tail_conv")(x)
    model = keras.Model(inputs, L.BatchNormalization(name="tail_bn")(x))
    assert ghost_plan(model) == {"shared": "shared layer (called more than once)", "tail_conv": REPLACE}
    ghost = ghostify(model)
    assert ghost.get_layer("shared").count_params() == 16 * 16 * 9
    assert len([layer for layer in ghost.layers if layer.name == "shared"]) == 1
    assert ghost.count_params() < model.count_params()


def test_bad_layer_names_and_options_raise(resnet20):
    with pytest.raises(ValueError, match=r"no layer 'stem_con'; did you mean stem_conv"):
        ghostify(resnet20, layers=["stem_con"])
    with pytest.raises(ValueError, match="'head_fc' is not a convolution"):
        ghostify(resnet20, layers=["head_fc"])
    with pytest.raises(ValueError, match="'dw' cannot become a Ghost module: depthwise"):
        ghostify(_mixed_model(), layers=["dw"])
    with pytest.raises(ValueError, match="'no_bn' cannot become a Ghost module: not followed"):
        ghostify(_mixed_model(), layers=["no_bn"])
    with pytest.raises(TypeError, match="layers must be a list of layer names"):
        ghostify(resnet20, layers="stem_conv")
    with pytest.raises(ValueError, match="ratio must be an int >= 2, got 1"):
        ghostify(resnet20, ratio=1)
    with pytest.raises(TypeError, match="functional tf_keras Model"):
        ghostify(resnet20.layers[1])
