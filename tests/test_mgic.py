"""MGIC: weights that grow linearly with width, the nested channel levels, and full channel
coupling through them (a grouped block alone couples only within its groups)."""
import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

import kerasnets
from kerasnets import blocks, mgic

L = keras.layers
WIDTHS = (64, 128, 256, 512)  # w, 2w, 4w, 8w


def trainable_params(model):
    return sum(int(np.prod(weight.shape)) for weight in model.trainable_weights)


def block_params(block, channels):
    inputs = L.Input((8, 8, channels))
    return trainable_params(keras.Model(inputs, block(inputs)))


def growth_exponents(block):
    """log2 of the parameter ratio per doubling of the width: 1 linear, 2 quadratic."""
    params = [block_params(block, channels) for channels in WIDTHS]
    return np.log2(np.divide(params[1:], params[:-1]))


def mgic_resnet_block(x):
    return mgic.mgic_basic_block(x, x.shape[-1], group_size=16, name="block")


def plain_resnet_block(x):
    channels = x.shape[-1]
    y = blocks.conv_bn(x, channels, 3, name="conv1")
    y = blocks.conv_bn(y, channels, 3, act=None, name="conv2")
    return blocks.activation(L.Add(name="add")([x, y]), "relu", name="out")


def mgic_mobilenet_block(x):
    return mgic.mgic_inverted_residual(x, 4 * x.shape[-1], x.shape[-1], kernel=3, stride=1,
                                       squeeze_excite=True, act="relu", group_size=16, name="block")


def plain_mobilenet_block(x):
    channels = x.shape[-1]
    y = blocks.conv_bn(x, 4 * channels, 1, name="expand")
    y = blocks.dw_bn(y, 3, act="relu", name="depthwise")
    y = blocks.squeeze_excite(y, channels, name="se")
    y = blocks.conv_bn(y, channels, 1, act=None, name="project")
    return L.Add(name="add")([x, y])


@pytest.mark.parametrize("mgic_block, plain_block", [
    (mgic_resnet_block, plain_resnet_block),
    (mgic_mobilenet_block, plain_mobilenet_block),
], ids=["resnet", "mobilenet_v3"])
def test_weights_grow_linearly_with_width_not_quadratically(mgic_block, plain_block):
    mgic_exponents = growth_exponents(mgic_block)
    plain_exponents = growth_exponents(plain_block)
    # each doubling adds one fine level of O(c * g) weights to a fixed coarsest block
    assert np.all(mgic_exponents < 1.15), mgic_exponents
    assert 0.98 < mgic_exponents[-1] < 1.05, mgic_exponents
    assert np.all(plain_exponents > 1.95), plain_exponents


@pytest.mark.parametrize("channels, group_size, levels", [
    (64, 16, [64, 32, 16]),
    (512, 16, [512, 256, 128, 64, 32, 16]),
    (16, 16, [16]),  # narrower than two groups: the plain block
    (40, 16, [40, 20]),
    (96, 32, [96, 48]),
    (24, 8, [24, 12]),  # 12 halves to 6 but only one group of 8 fits in 12
])
def test_channel_levels_halve_down_to_the_coarsest(channels, group_size, levels):
    assert mgic.channel_levels(channels, group_size) == levels


def test_level_groups_divide_every_width_they_touch():
    assert mgic.level_groups(64, 16) == 4
    assert mgic.level_groups(160, 16, 960) == 10
    assert mgic.level_groups(112, 16, 672) == 7
    assert mgic.level_groups(80, 16, 200) == 5
    assert mgic.level_groups(80, 16, 184) == 4  # 5 does not divide 184
    assert mgic.level_groups(64, 16, 90) == 2  # 4 and 3 do not divide 90 and 32
    assert mgic.level_groups(32, 16, 45) == 1  # an odd inner width does not halve
    assert mgic.level_groups(63, 16) == 1


def input_channels_reaching(block, channels, output_channel=0):
    """Input channels on which output channel `output_channel` (summed over space) depends."""
    keras.utils.set_random_seed(0)
    inputs = L.Input((6, 6, channels))
    model = keras.Model(inputs, block(inputs))
    x = tf.random.normal((1, 6, 6, channels), seed=1)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = tf.reduce_sum(model(x, training=False)[..., output_channel])
    sensitivity = tf.reduce_sum(tf.abs(tape.gradient(y, x)), axis=(0, 1, 2)).numpy()
    return np.flatnonzero(sensitivity > 1e-6)


def test_nested_groups_couple_every_channel_without_a_permutation():
    channels = 64  # levels 64 (4 groups), 32 (2 groups), 16 (full)
    reached = input_channels_reaching(mgic_resnet_block, channels)
    assert reached.tolist() == list(range(channels))
    fine_only = input_channels_reaching(
        lambda x: mgic._residual_smoother(x, 4, 0, name="fine"), channels)
    assert fine_only.tolist() == list(range(16))  # its own group of 16


def test_registered_variants_take_width_and_group_size():
    narrow = kerasnets.create_model("mgic_resnet20_cifar")
    wide = kerasnets.create_model("mgic_resnet20_cifar", width=2)
    assert trainable_params(wide) < 2.5 * trainable_params(narrow)  # a plain ResNet: ~4x
    fewer_levels = kerasnets.create_model("mgic_resnet20_cifar", group_size=32)
    assert trainable_params(fewer_levels) > trainable_params(narrow)


@pytest.mark.parametrize("kwargs, message", [
    ({"group_size": 0}, "group_size must be an int >= 1, got 0"),
    ({"group_size": 8.0}, "group_size must be an int >= 1, got 8.0"),
    ({"width": -1}, "width must be a positive number, got -1"),
])
def test_bad_variant_arguments_name_the_argument(kwargs, message):
    with pytest.raises(ValueError, match=message):
        kerasnets.create_model("mgic_resnet20_cifar", **kwargs)
