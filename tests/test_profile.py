"""The profiler on a model small enough to count by hand, and on registry models."""
import pytest
import tf_keras as keras

import kerasnets

L = keras.layers


def _hand_countable():
    inp = L.Input((8, 8, 3), name="x")
    x = L.Conv2D(4, 3, padding="same", use_bias=False, name="conv")(inp)  # 8*8*4 * 9*3 = 6912 MACs
    x = L.BatchNormalization(name="bn")(x)
    x = L.ReLU(name="relu")(x)
    x = L.DepthwiseConv2D(3, strides=2, padding="same", use_bias=False, name="dw")(x)  # 4*4*4*9 = 576
    x = L.Conv2D(6, 1, name="pw")(x)  # 4*4*6*4 = 384
    x = L.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inp, L.Dense(5, name="fc")(x), name="tiny")  # 6*5 = 30


def test_profile_counts_by_hand():
    stats = kerasnets.profile(_hand_countable())
    assert stats["macs"] == 6912 + 576 + 384 + 30
    by_name = {row["name"]: row for row in stats["layers"]}
    assert by_name["dw"]["macs"] == 576 and by_name["fc"]["macs"] == 30
    assert stats["params"] == 108 + 8 + 36 + 30 + 35  # BN's moving stats are not trainable
    assert stats["params_total"] == stats["params"] + 8
    # int8 kernels + int32 bias per output channel: conv 108+16, dw 36+16, pw 24+24, fc 30+20
    assert stats["weights_int8_bytes"] == 124 + 52 + 48 + 50
    assert stats["weights_float32_bytes"] == 4 * stats["params_total"]
    # peak: the 8x8x3 input and the 8x8x4 conv output are alive together (BN/ReLU run in place)
    assert stats["peak_activation_bytes"] == 192 + 256
    assert sum(row["macs"] for row in stats["layers"]) == stats["macs"]


def test_profile_rejects_non_functional_models():
    with pytest.raises(TypeError, match="functional tf_keras Model"):
        kerasnets.profile(keras.Sequential())


def test_profile_of_registry_model_matches_keras_param_count():
    model = kerasnets.create_model("resnet8")
    stats = kerasnets.profile(model)
    assert stats["params_total"] == model.count_params()
    assert stats["peak_activation_bytes"] >= max(row["live_activation_bytes"] for row in stats["layers"])
    assert len(stats["layers"]) == len(model.layers)
