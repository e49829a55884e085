"""MGiaD: the operator A shared by every smoothing step of a resolution level (one filter tensor
in the int8 model too), weights that grow linearly with width, and MACs that count every
application of a shared operator."""
import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

import kerasnets
from kerasnets import mgiad
from kerasnets.pipelines import convert
from conftest import calibrate_batchnorm

L = keras.layers
TINY = [(16, 2), (32, 2)]  # two resolution levels, two smoothing steps each


def trainable_params(model):
    return sum(int(np.prod(weight.shape)) for weight in model.trainable_weights)


def tiny_mgiad(width=1.0, group_size=8, input_shape=(16, 16, 3)):
    return mgiad._mgiad(TINY, width=width, group_size=group_size, input_shape=input_shape,
                        classes=10, include_top=True, pooling=None, classifier_activation="linear",
                        name="tiny_mgiad")


def applied_macs(model, *, every_call=True):
    """Multiply-accumulates of the conv/dense layers with kerasnets.profile's conventions,
    counting a shared layer once per call (or, every_call=False, once)."""
    total = 0
    for layer in model.layers:
        for node in layer.inbound_nodes[:None if every_call else 1]:
            outputs = int(np.prod(node.output_shapes[1:]))
            if isinstance(layer, L.DepthwiseConv2D):
                total += outputs * int(np.prod(layer.kernel_size))
            elif isinstance(layer, L.Conv2D):
                fan_in = node.input_shapes[-1] // layer.groups
                total += outputs * int(np.prod(layer.kernel_size)) * fan_in
            elif isinstance(layer, L.Dense):
                total += outputs * int(layer.kernel.shape[0])
    return total


def test_weights_grow_linearly_with_width_not_quadratically():
    channels = (64, 128, 256, 512)
    multilevel, plain = [], []
    for c in channels:
        inputs = L.Input((8, 8, c))
        operator = mgiad.MultilevelConv(c, group_size=16, batch_norm=False, name="A")
        multilevel.append(trainable_params(keras.Model(inputs, operator(inputs))))
        plain.append(trainable_params(keras.Model(inputs, L.Conv2D(c, 3, use_bias=False)(inputs))))
    assert np.all(np.log2(np.divide(multilevel[1:], multilevel[:-1])) < 1.15), multilevel
    assert np.all(np.divide(plain[1:], plain[:-1]) == 4)
    nets = [trainable_params(tiny_mgiad(width)) for width in (2, 4, 8, 16)]
    exponents = np.log2(np.divide(nets[1:], nets[:-1]))
    assert np.all(exponents < 1.2) and exponents[-1] < 1.06, exponents


def test_operator_a_is_shared_by_every_step_of_its_level():
    model = tiny_mgiad()
    # level 1 starts from u = 0: A in step 2 and on leaving; level 2 (the last): in its data
    # and in step 2 (step 1 takes the restricted residual)
    assert len(model.get_layer("level1_A_conv").inbound_nodes) == 2
    assert len(model.get_layer("level2_A_conv").inbound_nodes) == 2
    for step in (1, 2):  # each smoothing step has its own B
        assert len(model.get_layer(f"level2_step{step}_B_conv").inbound_nodes) == 1


def test_a_shared_operator_keeps_one_filter_tensor_in_the_int8_model(digit_batches):
    model = tiny_mgiad()
    images = digit_batches(model.input_shape[1:], 4)
    calibrate_batchnorm(model, images)
    interpreter = convert.litert_interpreter(convert.to_int8(model, images), reference=True)
    filters = [op["inputs"][1] for op in interpreter._get_ops_details()
               if op["op_name"] == "CONV_2D"]
    conv_layers = [layer for layer in model.layers
                   if isinstance(layer, L.Conv2D) and not isinstance(layer, L.DepthwiseConv2D)]
    calls = sum(len(layer.inbound_nodes) for layer in conv_layers)
    assert len(filters) == calls > len(conv_layers)
    assert len(set(filters)) == len(conv_layers)  # one filter tensor per Keras conv layer


def test_registered_macs_count_every_application_of_a_shared_operator():
    info = kerasnets.model_info("mgiad_cifar")
    model = kerasnets.create_model("mgiad_cifar")
    assert trainable_params(model) == info.params
    assert applied_macs(model) == pytest.approx(info.macs, rel=1e-3)
    assert applied_macs(model) > 1.4 * applied_macs(model, every_call=False)  # A runs 2-3 times


def test_levels_must_nest_and_arguments_are_checked():
    with pytest.raises(ValueError, match="level widths must each divide the next"):
        mgiad._mgiad([(16, 1), (24, 1)], width=1.0, group_size=8, input_shape=(16, 16, 3),
                     classes=10, include_top=True, pooling=None, classifier_activation="linear",
                     name="bad")
    with pytest.raises(ValueError, match="group_size must be an int >= 1, got -2"):
        kerasnets.create_model("mgiad_cifar", group_size=-2)
