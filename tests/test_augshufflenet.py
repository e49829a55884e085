"""AugShuffleNet: split sizes, the unit against an independent NumPy forward pass, and its sizes
against ShuffleNetV2 at the same width (the paper's claim)."""
import numpy as np
import pytest
import tf_keras as keras

import kerasnets
from kerasnets import augshufflenet
from conftest import assert_same_outputs

WIDTHS = ("050", "100", "150")


@pytest.mark.parametrize("channels, ratio, expected", [
    (48, 0.5, (12, 24)), (96, 0.375, (30, 36)), (192, 0.375, (60, 72)),
    (120, 0.5, (30, 60)), (240, 0.375, (75, 90)), (480, 0.375, (150, 180)),
    (176, 0.5, (44, 88)), (352, 0.375, (110, 132)), (704, 0.375, (220, 264)),
])
def test_split_sizes(channels, ratio, expected):
    assert augshufflenet.augshuffle_split(channels, ratio) == expected


def test_odd_split_is_rejected():
    with pytest.raises(ValueError, match="even conv part"):
        augshufflenet.augshuffle_split(116, 0.375)  # ShuffleNetV2 1.0x width: 43 conv channels


def _bn(x, gamma, beta, mean, var, eps=1e-5):
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def _depthwise_3x3(x, kernel):
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    h, w = x.shape[1:3]
    return sum(padded[:, i:i + h, j:j + w, :] * kernel[i, j, :, 0] for i in range(3) for j in range(3))


def _reference_unit(x, weights, bank, conv):
    """The author's forward pass: three-way split, conv path, crossover, fused 1x1, shuffle."""
    x1, x2, x3 = x[..., :bank], x[..., bank:2 * bank], x[..., 2 * bank:]
    y = _bn(x3 @ weights["u_pw1_conv"][0][0, 0], *weights["u_pw1_bn"])
    y = _bn(_depthwise_3x3(y, weights["u_dw"][0]), *weights["u_dwbn"])
    c1, c2 = y[..., :conv // 2], y[..., conv // 2:]
    fused = np.concatenate([c2, x2], -1) @ weights["u_pw2_conv"][0][0, 0]
    fused = np.maximum(_bn(fused, *weights["u_pw2_bn"]), 0)
    out = np.concatenate([c1, x1, fused], -1)
    n, h, w, c = out.shape
    return out.reshape(n, h, w, 2, c // 2).transpose(0, 1, 2, 4, 3).reshape(n, h, w, c)


def test_unit_matches_an_independent_forward_pass():
    channels, ratio = 16, 0.375
    inputs = keras.layers.Input((5, 5, channels))
    model = keras.Model(inputs, augshufflenet._augshuffle_unit(inputs, ratio=ratio, name="u"))
    rng = np.random.default_rng(0)
    weights = {}
    for layer in model.layers:
        values = [rng.normal(size=w.shape).astype("float32") for w in layer.get_weights()]
        if isinstance(layer, keras.layers.BatchNormalization):
            values[3] = np.abs(values[3]) + 0.5  # a variance
        layer.set_weights(values)
        weights[layer.name] = values
    x = rng.normal(size=(2, 5, 5, channels)).astype("float32")
    bank, conv = augshufflenet.augshuffle_split(channels, ratio)
    assert_same_outputs(model(x, training=False), _reference_unit(x, weights, bank, conv), atol=1e-4)


@pytest.mark.parametrize("width", WIDTHS)
def test_cheaper_than_shufflenetv2_at_the_same_width(width):
    aug = kerasnets.create_model(f"augshufflenet_{width}_cifar")
    base = kerasnets.profile(kerasnets.create_model(f"shufflenetv2_{width}_cifar"))
    ours = kerasnets.profile(aug)
    assert ours["params"] < base["params"] and ours["macs"] < base["macs"]
    shuffles = [layer for layer in aug.layers if layer.name.endswith("_shuffle_transpose")]
    assert len(shuffles) == sum(augshufflenet.UNITS_PER_STAGE)
    assert all(len(layer.output.shape) <= 4 for layer in aug.layers)


def test_rejects_unknown_arguments():
    with pytest.raises(TypeError, match="augshufflenet_050_cifar.*width"):
        kerasnets.create_model("augshufflenet_050_cifar", width=2.0)
