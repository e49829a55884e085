"""Where int8 gains, block by block (kerasnets.tools.int8_blocks): the cuts split every family's
graph where nothing else crosses, and the per-block rows cover the whole model."""
import pytest
import tf_keras as keras
from tf_keras import layers as L

import kerasnets
from kerasnets.profile import profile
from kerasnets.tools import int8_blocks
from conftest import one_per_family, small_input_shape


def _residual_toy():
    x = keras.Input((8, 8, 3), name="input")
    a = L.Conv2D(4, 3, padding="same", name="block1_conv")(x)
    b = L.Conv2D(4, 3, padding="same", name="block1_conv2")(a)
    c = L.Add(name="block1_add")([a, b])
    d = L.Conv2D(4, 1, name="block2_conv")(c)
    return keras.Model(x, L.Dense(2, name="head_fc")(L.GlobalAveragePooling2D(name="head_pool")(d)))


def test_no_cut_falls_inside_a_residual_block():
    model = _residual_toy()
    # block1_conv2 is not a cut: block1_conv's output is still read by the add after it
    assert int8_blocks.clean_cuts(model) == ["block1_conv", "block1_add", "block2_conv", "head_pool", "head_fc"]
    assert int8_blocks.block_cuts(model) == ["block1_add", "block2_conv", "head_fc"]


def _ancestors(model, name):
    return {layer.name for layer in keras.Model(model.input, model.get_layer(name).output).layers}


@pytest.mark.parametrize("name", [n for n in one_per_family() if n != "mgiad_cifar"])
def test_block_cuts_split_every_family_where_nothing_else_crosses(name):
    """Checked against Keras's own graph: the prefix ending at a cut holds exactly the layers
    before it, no later layer reads one of them but the cut, and the blocks' MACs add up."""
    model = kerasnets.create_model(name, input_shape=small_input_shape(name), classes=10)
    cuts = int8_blocks.block_cuts(model)
    assert cuts[-1] == model.layers[-1].name and len(cuts) >= 3
    names = [layer.name for layer in model.layers]
    reads = [{t._keras_history.layer.name for t in (layer.input if isinstance(layer.input, list) else [layer.input])}
             for layer in model.layers[1:]]
    for cut in int8_blocks.clean_cuts(model):
        at = names.index(cut)
        crossing = set().union(*reads[at:]) & set(names[:at])  # reads[at] is the layer after the cut
        assert not crossing, f"{crossing} read across the cut {cut}"
    for cut in cuts:
        assert _ancestors(model, cut) == set(names[:names.index(cut) + 1]), cut
    assert sum(int8_blocks._segment_macs(model, cuts)) == profile(model)["macs"]


def test_a_model_that_calls_a_layer_twice_is_refused_by_name():
    model = kerasnets.create_model("mgiad_cifar", classes=10)
    with pytest.raises(ValueError, match="calls a layer more than once"):
        int8_blocks.block_cuts(model)


def test_bad_timing_arguments_are_named():
    with pytest.raises(ValueError, match="rounds and runs must be >= 1.*rounds=0"):
        int8_blocks.int8_gain_by_block(_residual_toy(), None, rounds=0)


def _cli(*args):
    import os
    import subprocess
    import sys
    return subprocess.run([sys.executable, "-c", "from kerasnets.tools.cli import run; run()", *args],
                          capture_output=True, text=True, timeout=600, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})


def test_bench_by_block_times_every_block_of_the_reference_and_refuses_a_tflite():
    import json

    done = _cli("bench", "--model=resnet8", "--by_block", "--runs=2")
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.strip().splitlines()]
    assert [list(r) for r in rows] == [int8_blocks.COLUMNS] * 5
    assert [r["ends_at"] for r in rows] == ["stem_relu", "stack1_out", "stack2_out", "stack3_out", "head_fc"]
    assert [r["output_shape"] for r in rows] == ["32x32x16", "32x32x16", "16x16x32", "8x8x64", "10"]
    assert sum(r["macs"] for r in rows) == 12501632
    assert rows[-1]["model_int8_ms"] > 0 and rows[-1]["model_fp32_ms"] > 0
    assert sum(r["int8_ms"] for r in rows) == pytest.approx(rows[-1]["model_int8_ms"], abs=1e-3)
    refused = _cli("bench", "--tflite=model.tflite", "--by_block")
    assert refused.returncode != 0 and "give --model NAME, not --tflite" in refused.stderr
