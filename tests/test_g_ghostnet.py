"""G-GhostNet on RegNetX: the official channel split and the G-Ghost stage layout."""
import pytest
import tf_keras as keras

import kerasnets
from kerasnets import g_ghostnet
from kerasnets.g_ghostnet import TFLM_MAX_CONCAT_INPUTS, VARIANTS, ghost_split

L = keras.layers


@pytest.mark.parametrize("width, group_width, expected", [  # int(0.75 g) = 36, 30, 90, 96
    (192, 48, (72, 120)), (432, 48, (216, 216)),      # RegNetX-3.2GF stages 2, 3
    (240, 40, (120, 120)), (560, 40, (270, 290)),     # 4.0GF
    (240, 120, (90, 150)), (720, 120, (360, 360)),    # 8.0GF
    (512, 128, (192, 320)), (896, 128, (384, 512)),   # 16GF
])
def test_raw_and_cheap_channels_follow_the_official_rule(width, group_width, expected):
    assert ghost_split(width, group_width) == expected


@pytest.fixture(scope="module")
def regnetx_080():
    return kerasnets.create_model("g_ghost_regnetx_080", input_shape=(64, 64, 3))


def _names(model, prefix):
    return [layer.name for layer in model.layers if layer.name.startswith(prefix)]


def test_stage_layout(regnetx_080):
    depths, widths, group_width = VARIANTS["080"]
    assert not _names(regnetx_080, "stage1_mix") and not _names(regnetx_080, "stage4_mix")
    for stage in (2, 3):
        depth, width = depths[stage - 1], widths[stage - 1]
        raw, cheap = ghost_split(width, group_width)
        pools = _names(regnetx_080, f"stage{stage}_mix_pool")
        assert len(pools) == depth - 1  # first block and every complicated block
        for block in range(2, depth):
            grouped = regnetx_080.get_layer(f"stage{stage}_block{block}_b_conv")
            assert grouped.filters == raw and grouped.groups == raw // int(0.75 * group_width)
        assert regnetx_080.get_layer(f"stage{stage}_cheap_conv").filters == cheap
        assert regnetx_080.get_layer(f"stage{stage}_concat").output.shape[-1] == width
        assert regnetx_080.get_layer(f"stage{stage}_block{depth}_b_conv").groups == width // group_width


def test_no_concatenation_exceeds_tflite_micro_inputs(regnetx_080):
    concats = [layer for layer in regnetx_080.layers if isinstance(layer, L.Concatenate)]
    assert max(len(layer.input) for layer in concats) <= TFLM_MAX_CONCAT_INPUTS
    mixed = regnetx_080.get_layer("stage3_mix_concat").output.shape[-1]
    raw, _ = ghost_split(720, 120)
    assert mixed == 720 + raw * (15 - 2)  # the official mix input width


def test_rejects_unknown_arguments_and_too_shallow_stages():
    with pytest.raises(TypeError, match="g_ghost_regnetx_032.*width"):
        kerasnets.create_model("g_ghost_regnetx_032", width=2.0)
    with pytest.raises(ValueError, match="needs depth >= 3"):
        g_ghostnet._g_ghost_stage(L.Input((8, 8, 16)), 64, 2, group_width=16, name="s")
