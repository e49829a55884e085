"""Structured channel pruning through the public API: graph, surgery, criteria, budgets, CLI."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tf_keras as keras

import kerasnets
from kerasnets.pipelines import data, prune
from kerasnets.pipelines.prune import complexity, graph as graph_mod, l1, qsfm, slimming, structured
from conftest import (assert_same_outputs, calibrate_batchnorm, int8_outputs, registry_params,
                      small_input_shape)

MODELS = kerasnets.list_models()
# The pruned int8 chain costs a conversion per model: the default run proves it on a residual
# net, on one with depthwise convs, squeeze-excite and hard-swish, and on one with condensed
# (indexed) group convs, a depthwise multiplier and grouped 3x3 convs; `-m slow` on all the rest.
CHAIN_IN_DEFAULT_RUN = ("resnet8", "mobilenet_v3_small_100", "effcnet_cifar")
# Registered models that lose no channel at ratio 0.3, each with the reason: the registry test
# fails for any other model that loses none, and for a listed one that starts losing some.
# README's Compression section names the same models. Every family prunes today.
UNPRUNABLE: dict[str, str] = {}


def _pruned_30_percent(name, images=None, **kwargs):
    model = kerasnets.create_model(name, input_shape=small_input_shape(name), **kwargs)
    images = data.digits_images(model.input_shape[1:], 8)[0] if images is None else images
    calibrate_batchnorm(model, images)
    graph = prune.analyse(model)
    remove = prune.select(graph, l1.scores(graph), 0.3)
    return model, graph, remove, images


@pytest.mark.parametrize("name", registry_params(MODELS))
def test_pruning_30_percent_shrinks_and_matches_the_masked_original(name):
    model, graph, remove, images = _pruned_30_percent(name)
    pruned = prune.prune_channels(model, remove, graph=graph)
    masked = prune.mask_channels(model, remove, graph=graph)
    assert_same_outputs(pruned(images, training=False), masked(images, training=False), atol=1e-4)
    assert pruned.output_shape == model.output_shape
    if name in UNPRUNABLE:
        assert not remove, f"{name} now loses {len(remove)} channels: take it off UNPRUNABLE"
        return
    assert remove, f"{name} loses no channel at ratio 0.3 (list it in UNPRUNABLE with the reason)"
    assert len(remove) >= int(0.25 * len(graph.channels))
    assert pruned.count_params() < model.count_params()


def test_readme_names_the_unprunable_models():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Compression"):text.index("## TFLite export")]
    assert all(name in section for name in UNPRUNABLE), UNPRUNABLE
    assert ("every registered model" in section) == (not UNPRUNABLE)


@pytest.mark.parametrize("name", registry_params(MODELS, set(MODELS) - set(CHAIN_IN_DEFAULT_RUN)))
def test_pruned_model_runs_the_int8_chain(name):
    model, graph, remove, images = _pruned_30_percent(name, classifier_activation="linear")
    pruned = prune.prune_channels(model, remove, graph=graph)
    _, summary, _, reference, micro = int8_outputs(pruned, images)
    diff = np.abs(reference.astype(int) - micro)
    assert diff.max() <= (1 if "FULLY_CONNECTED" in summary["ops"] else 0), diff.max()


def test_chain_subset_names_are_registered():
    assert set(CHAIN_IN_DEFAULT_RUN) <= set(MODELS)


def _resnet8():
    model = kerasnets.create_model("resnet8", input_shape=(32, 32, 1), classes=10)
    images = data.digits_images((32, 32, 1), 16)[0]
    calibrate_batchnorm(model, images)
    return model, images


def test_residual_channels_are_pruned_together():
    model, _ = _resnet8()
    graph = prune.analyse(model)
    stream = [s for s in graph.channel_sets() if len({n for r in s for n, _ in graph.producers[r]}) > 1]
    assert stream, "the residual stream of a stage must couple the convs adding into it"
    pruned = prune.prune_channels(model, stream[0][:3], graph=graph)
    producers = {name for r in stream[0] for name, _ in graph.producers[r]}
    for name in producers:
        assert pruned.get_layer(name).filters == model.get_layer(name).filters - 3


def _grouped_net():
    """A RegNet-style block: 1x1, 3x3 grouped (4 groups of 4), 1x1 — the grouped filters prunable."""
    L = keras.layers
    inp = keras.Input((8, 8, 3))
    x = L.ReLU()(L.BatchNormalization(name="bn1")(L.Conv2D(16, 1, name="c1")(inp)))
    x = L.ReLU()(L.BatchNormalization(name="bn2")(L.Conv2D(16, 3, padding="same", groups=4, name="grouped")(x)))
    x = L.GlobalAveragePooling2D()(L.Conv2D(12, 1, name="c3")(x))
    model = keras.Model(inp, L.Dense(5, name="head")(x))
    images = np.random.default_rng(0).normal(size=(8, 8, 8, 3)).astype("float32")
    calibrate_batchnorm(model, images)
    return model, images


@pytest.mark.parametrize("method", ["l1", "qsfm"])
def test_grouped_conv_loses_the_same_number_of_filters_in_every_group(method):
    model, images = _grouped_net()
    graph = prune.analyse(model)
    assert graph.grouped == {"grouped": 4}
    parts = graph.filter_groups("grouped")
    assert [len(p) for p in parts] == [4, 4, 4, 4] and set(sum(parts, [])) <= set(graph.channels)
    graph_remove = prune.select(graph, l1.scores(graph), 0.5)
    pruned = (qsfm.prune(model, images, 0.5, graph=graph) if method == "qsfm"
              else prune.prune_channels(model, graph_remove, graph=graph))
    layer = pruned.get_layer("grouped")
    assert layer.groups == 4 and layer.filters == 8  # 2 of 4 filters left in each group
    assert pruned.get_layer("c3").kernel.shape[-2] == 8
    if method == "l1":
        masked = prune.mask_channels(model, graph_remove, graph=graph)
        assert_same_outputs(pruned(images, training=False), masked(images, training=False), atol=1e-4)
    uneven = parts[0][:2] + parts[1][:1]
    with pytest.raises(ValueError, match=r"grouped conv 'grouped' would lose \[2, 1, 0, 0\] filters"):
        prune.prune_channels(model, uneven, graph=graph)
    assert graph.balance(uneven, rounding="down") == []


def test_a_grouped_conv_feeding_a_residual_add_keeps_its_filters():
    L = keras.layers
    inp = keras.Input((8, 8, 8))
    x = L.Add()([inp, L.Conv2D(8, 3, padding="same", groups=2, name="grouped")(L.Conv2D(8, 1, name="c1")(inp))])
    model = keras.Model(inp, L.Dense(3)(L.GlobalAveragePooling2D()(x)))
    graph = prune.analyse(model)
    assert graph.grouped == {}
    assert all(root in graph.fixed for root in graph.roots(graph.layer_out["grouped"]))


def _shuffle_net():
    """ShuffleNet v1's bottleneck: grouped 1x1 (3 groups of 8) -> depthwise -> shuffle -> grouped
    1x1. After the shuffle, channel i of every group sits at 3i, 3i+1, 3i+2, and the second conv's
    groups read 8 positions each, so rows 2 (6..8) and 5 (15..17) straddle two of its groups."""
    from kerasnets import blocks

    L = keras.layers
    inputs = keras.Input((6, 6, 6))
    x = L.BatchNormalization(name="bn1")(L.Conv2D(24, 1, groups=3, name="pw1")(inputs))
    x = L.BatchNormalization(name="bn2")(L.DepthwiseConv2D(3, padding="same", name="dw")(L.ReLU()(x)))
    x = blocks.channel_shuffle(x, 3, name="shuffle")
    x = L.BatchNormalization(name="bn3")(L.Conv2D(12, 1, groups=3, name="pw2")(x))
    model = keras.Model(inputs, L.Dense(4, name="head")(L.GlobalAveragePooling2D()(L.ReLU()(x))))
    images = np.random.default_rng(0).normal(size=(8, 6, 6, 6)).astype("float32")
    calibrate_batchnorm(model, images)
    return model, images


def test_a_channel_shuffle_prunes_its_groups_together_and_stays_a_shuffle():
    model, images = _shuffle_net()
    graph = prune.analyse(model)
    rows = graph.roots(graph.layer_out["pw1"]).reshape(3, 8)  # [group, i]
    assert (rows == rows[0]).all()  # channel i of every group is one prunable channel
    shuffled = set(graph.channels) & set(rows[0].tolist())
    assert shuffled == set(rows[0, [0, 1, 3, 4, 6, 7]].tolist())  # rows 2 and 5 straddle: kept
    remove = prune.select(graph, l1.scores(graph), 0.5)
    assert len(shuffled & set(remove)) == 3  # one row from each of pw2's groups
    pruned = prune.prune_channels(model, remove, graph=graph)
    assert pruned.get_layer("pw1").filters == 15 and pruned.get_layer("pw1").groups == 3
    assert pruned.get_layer("shuffle_split").target_shape == (36, 3, 5)
    assert pruned.get_layer("pw2").kernel.shape == (1, 1, 5, 6)  # and 2 of 4 filters per group
    masked = prune.mask_channels(model, remove, graph=graph)
    assert_same_outputs(pruned(images, training=False), masked(images, training=False), atol=1e-4)
    _, summary, _, reference, micro = int8_outputs(pruned, images)
    assert "TRANSPOSE" in summary["ops"] and np.array_equal(reference, micro)
    with pytest.raises(ValueError, match=r"grouped conv 'pw2' would lose \[6, 0, 0\] input channels"):
        prune.prune_channels(model, rows[0, [0, 1]].tolist(), graph=graph)


def test_a_condensed_group_conv_cuts_and_renumbers_its_index():
    """IndexedGroupConv: group 0 reads channels 0, 1, 2, 5 and group 1 reads 2, 3, 6, 7. Without
    channels 1 and 2, group 0 keeps 2 rows and group 1 keeps 3: group 0 is padded with a zero row
    reading a channel it already reads, and the index names the channels' new positions."""
    from kerasnets.layers import IndexedGroupConv

    L = keras.layers
    inputs = keras.Input((4, 4, 3))
    x = L.BatchNormalization(name="bn0")(L.Conv2D(8, 1, name="c0")(inputs))
    x = IndexedGroupConv(6, groups=2, indices=[0, 1, 2, 5, 2, 3, 6, 7], name="igc")(x)
    x = L.GlobalAveragePooling2D()(L.BatchNormalization(name="bn1")(x))
    model = keras.Model(inputs, L.Dense(3, name="head")(x))
    images = np.random.default_rng(0).normal(size=(4, 4, 4, 3)).astype("float32")
    calibrate_batchnorm(model, images)
    graph = prune.analyse(model)
    inputs_of_igc = graph.roots(graph.layer_out["c0"])
    by_t = graph.roots(graph.layer_out["igc"]).reshape(3, 2)  # output g + 2t: filter t of group g
    assert (by_t[:, 0] == by_t[:, 1]).all() and set(inputs_of_igc) <= set(graph.channels)
    remove = [int(inputs_of_igc[1]), int(inputs_of_igc[2]), int(by_t[1, 0])]
    pruned = prune.prune_channels(model, remove, graph=graph)
    layer = pruned.get_layer("igc")
    assert layer.indices == [0, 3, 0, 1, 4, 5] and layer.filters == 4
    assert not layer.get_weights()[0][0, 0, 2, :2].any()  # group 0's padding row
    masked = prune.mask_channels(model, remove, graph=graph)
    assert_same_outputs(pruned(images, training=False), masked(images, training=False), atol=1e-4)


@pytest.mark.parametrize("method", ["l1", "bn", "complexity_pa", "complexity_fa", "complexity_ma"])
def test_data_free_methods_shrink_the_model(method):
    model, images = _resnet8()
    pruned, summary = prune.compress(model, method, ratio=0.4)
    assert summary["params_after"] < summary["params_before"]
    assert summary["macs_after"] < summary["macs_before"]
    assert pruned(images).shape == (16, 10)


# A two-conv net whose answer is known: filter k of c1 / c2 is the constant C1[k] / C2[k] (its L1
# norm is 9x that), and b1 / b2 give channel k the beta B1[k] / B2[k] (gamma 1), ranked unlike the
# filters. The constants are distinct, so a pruned kernel's values name the filters that stayed.
C1 = np.array([0.5, 0.2, 0.7, 0.1, 0.3, 0.6, 0.15, 0.4], "float32")
C2 = np.array([0.3, 0.8, 0.1, 0.6, 0.25, 0.5, 0.7, 0.2], "float32")
B1 = np.array([2.0, 1.0, -3.0, 0.5, 1.5, -2.0, 3.0, 0.0], "float32")
B2 = np.array([-1.0, 2.5, 1.0, -2.5, 0.5, 2.0, 0.0, 1.5], "float32")


def _known_answer_model():
    inputs = keras.Input((8, 8, 1))
    x = inputs
    for conv, bn, filters, betas in (("c1", "b1", C1, B1), ("c2", "b2", C2, B2)):
        layer = keras.layers.Conv2D(8, 3, padding="same", use_bias=False, name=conv)
        norm = keras.layers.BatchNormalization(name=bn)
        x = keras.layers.ReLU()(norm(layer(x)))
        layer.set_weights([np.broadcast_to(filters, layer.kernel.shape).copy()])
        norm.set_weights([np.ones(8, "float32"), betas, np.zeros(8, "float32"), np.ones(8, "float32")])
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(10, name="fc")(x))


def _kept(pruned, conv, constants):
    """Original indices of the filters of `conv` that survived, from their constant values."""
    kernel = pruned.get_layer(conv).get_weights()[0]
    return sorted(int(np.flatnonzero(np.isclose(constants, kernel[..., k].flat[0]))[0])
                  for k in range(kernel.shape[-1]))


def _lowest(values, count):
    return sorted(np.argsort(values)[:count].tolist())


@pytest.mark.parametrize("method", ["l1", "bn", "complexity_pa", "complexity_fa", "complexity_ma"])
def test_data_free_methods_remove_the_channels_they_should(method):
    """l1 removes the filters with the smallest L1 norm, bn the channels with the smallest expected
    ReLU output (here: the smallest beta, gamma being 1), 2 of 8 per layer at ratio 0.25; the
    complexity modes share the ratio out by cost, and in each layer remove the smallest-L1 filters."""
    model = _known_answer_model()
    pruned, _ = prune.compress(model, method, ratio=0.25)
    kept = {"c1": _kept(pruned, "c1", C1), "c2": _kept(pruned, "c2", C2)}
    for conv, filters, betas in (("c1", C1, B1), ("c2", C2, B2)):
        if method.startswith("complexity"):
            removed = 8 - len(kept[conv])
            expected = _lowest(filters, removed)
        else:
            removed = 2
            expected = _lowest(filters if method == "l1" else betas, removed)
        assert sorted(set(range(8)) - set(kept[conv])) == expected, (conv, kept[conv])
    if method.startswith("complexity"):
        assert 16 - len(kept["c1"]) - len(kept["c2"]) >= 3  # about 0.25 of the 16 channels (int per layer)


def test_complexity_modes_prune_the_costly_layers_most():
    model, _ = _resnet8()
    graph = prune.analyse(model)
    sets = graph.channel_sets()
    stage = [int(graph.producers[s[0]][0][0].startswith(("stack2", "stack3"))) +
             int(graph.producers[s[0]][0][0].startswith("stack3")) for s in sets]  # 0, 1, 2
    ratios = {mode: complexity.set_ratios(graph, 0.3, mode) for mode in ("pa", "fa", "ma")}
    mean = lambda mode, k: np.mean([ratios[mode][i] for i in range(len(sets)) if stage[i] == k])  # noqa: E731
    assert mean("pa", 2) > mean("pa", 0)  # parameters sit in the wide last stage
    assert mean("fa", 0) > mean("fa", 2)  # MACs per channel are highest at full resolution
    assert mean("ma", 0) > 0 and mean("ma", 2) == 0  # only the tensors live at the peak
    uniform = prune.compress(model, "l1", ratio=0.3)[1]
    memory = prune.compress(model, "complexity_ma", ratio=0.3)[1]
    assert memory["peak_ram_after"] < uniform["peak_ram_after"]


def test_targets_parse_with_units():
    assert structured.Target.parse("macs=6M") == structured.Target((("macs", 6e6),))
    assert structured.Target.parse("params=30k") == structured.Target((("params", 3e4),))
    assert structured.Target.parse("peak_ram=64kB") == structured.Target((("peak_ram", 65536),))
    assert structured.Target.parse("int8_kb=40") == structured.Target((("int8_kb", 40),))
    both = structured.Target.parse("int8_kb=90, peak_ram=55kB")
    assert both == structured.Target((("int8_kb", 90), ("peak_ram", 56320))) and str(both) == "int8_kb=90,peak_ram=56320"
    assert both.missed({"int8_kb": 91, "peak_ram": 50000}) == {"int8_kb": 91}
    with pytest.raises(ValueError, match="unknown unit"):
        structured.Target.parse("macs=6Q")
    with pytest.raises(ValueError, match="names macs twice"):
        structured.Target.parse("macs=6M,macs=5M")


@pytest.mark.parametrize("method, target", [("l1", "macs=6M"), ("complexity_ma", "peak_ram=30kB")])
def test_budget_mode_meets_the_target(method, target):
    model, _ = _resnet8()
    pruned, summary = prune.compress(model, method, target=target)
    goal = structured.Target.parse(target)
    assert not goal.missed(structured.profiled(pruned)) and goal.missed(structured.profiled(model))
    assert 0 < summary["ratio"] < 0.95


def test_a_budget_of_two_limits_meets_both():
    """Parameters bind first in resnet8's wide last stage, peak RAM in its first: the pruned net
    must meet the tighter of the two for each."""
    model, _ = _resnet8()
    before = structured.profiled(model)
    target = f"params={0.6 * before['params']:.0f},peak_ram={0.7 * before['peak_ram'] / 1024:.1f}kB"
    pruned, summary = prune.compress(model, "l1", target=target)
    after = structured.profiled(pruned)
    assert not structured.Target.parse(target).missed(after)
    alone = [structured.profiled(prune.compress(model, "l1", target=t)[0])
             for t in target.split(",")]
    # meeting both takes more pruning than meeting either alone
    assert after["params"] <= min(a["params"] for a in alone) and summary["target"] == str(structured.Target.parse(target))


def test_unreachable_target_is_a_clear_error():
    model, _ = _resnet8()
    with pytest.raises(ValueError, match="out of reach"):
        prune.compress(model, "l1", target="params=100")


def test_qsfm_compensation_keeps_outputs_closer_than_plain_removal():
    model, images = _resnet8()
    reference = model(images, training=False).numpy()
    compensated = qsfm.prune(model, images, 0.3)
    graph = prune.analyse(model)
    plain = structured.prune_by_scores(model, l1.scores(graph), 0.3, graph=graph)
    error = lambda m: float(np.abs(m(images, training=False).numpy() - reference).mean())  # noqa: E731
    assert compensated.count_params() == plain.count_params()
    assert error(compensated) < error(plain)


def test_slimming_penalty_and_global_selection():
    model, images = _resnet8()
    penalised = slimming.with_gamma_penalty(model, 1e-3)
    assert penalised.losses, "the L1 penalty on BN scales must show up as a model loss"
    assert_same_outputs(penalised(images, training=False), model(images, training=False))
    digits = data.load("digits", image_shape=(32, 32, 1))
    slim, summary = prune.compress(model, "slimming", ratio=0.5, data=digits, epochs=1,
                                   config={"batch_size": 128})
    assert summary["params_after"] < summary["params_before"]
    assert slim(images).shape == (16, 10)


@pytest.mark.parametrize("method, ratio", [("magnitude", 0.6), ("m_by_n", 0.5)])
def test_sparsity_methods_through_compress(method, ratio):
    from kerasnets.pipelines.prune import sparsity

    model, images = _resnet8()
    digits = data.load("digits", image_shape=(32, 32, 1))
    sparse, summary = prune.compress(model, method, ratio=ratio, data=digits, epochs=1,
                                     config={"batch_size": 128})
    assert summary["params_after"] == summary["params_before"]  # same shape, zeros inside
    assert sparsity.sparsity_report(sparse)["overall"] >= ratio - 0.05
    if method == "m_by_n":
        assert sparsity.verify_m_by_n(sparse, 2, 4)


def _marked_model():
    """A small conv net whose weights no initialiser and no short training produce: every first-conv
    weight is +0.25 or more, and the BatchNorm after it has a moving variance of 100."""
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(16, 3, padding="same", name="c1")(inputs)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization(name="b1")(x))
    x = keras.layers.Conv2D(16, 3, padding="same", name="c2")(x)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization(name="b2")(x))
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax", name="fc")(x))
    conv, bn = model.get_layer("c1"), model.get_layer("b1")
    conv.set_weights([np.full((3, 3, 1, 16), 0.25, "float32") + np.arange(16, dtype="float32") / 100,
                      np.zeros(16, "float32")])
    gamma, beta, mean, _ = bn.get_weights()
    bn.set_weights([gamma, beta, mean, np.full(16, 100.0, "float32")])
    return model


def test_from_scratch_reinitialises_the_pruned_architecture(tmp_path):
    """`kerasnets compress --from_scratch`: the pruned net trains from fresh weights, so none of the
    original's marks survive one epoch (fine-tuning would keep them: ~0.9 of the moving variance
    after 11 steps at momentum 0.99, kernels that moved by about the learning rate)."""
    _marked_model().save(tmp_path / "marked.keras")
    out = tmp_path / "scratch.keras"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([sys.executable, "-m", "kerasnets.tools.cli", "compress",
                             f"--keras={tmp_path / 'marked.keras'}", "--method=l1", "--ratio=0.25",
                             "--from_scratch", "--dataset=digits", "--epochs=1", "--batch_size=128",
                             f"--out={out}"], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.strip().splitlines()[-1])["strategy"] == "scratch"
    scratch = keras.models.load_model(out)
    kernel = scratch.get_layer("c1").get_weights()[0]
    assert kernel.shape[-1] < 16  # pruned
    assert kernel.min() < 0 < kernel.max() and abs(kernel.mean()) < 0.1  # a fresh symmetric initialisation
    assert scratch.get_layer("b1").get_weights()[3].max() < 10  # statistics of this training only


@pytest.mark.parametrize("kwargs, message", [
    ({"method": "l1", "ratio": 0.0}, "in \\(0, 1\\)"),
    ({"method": "l1", "ratio": 1.0}, "in \\(0, 1\\)"),
    ({"method": "nope", "ratio": 0.5}, "unknown compression method"),
    ({"method": "l1"}, "exactly one of `ratio`"),
    ({"method": "l1", "target": "flops=3"}, "KEY=VALUE"),
    ({"method": "magnitude", "target": "macs=3M"}, "cannot prune to a `target`"),
    ({"method": "qsfm", "ratio": 0.5}, "needs training data: pass `data`"),
    ({"method": "scl", "ratio": 0.5}, r"set the connection-count strength instead \(`strength`, default 0.5\)"),
])
def test_bad_requests_are_clear_errors(kwargs, message):
    model, _ = _resnet8()
    with pytest.raises(ValueError, match=message):
        prune.compress(model, **kwargs)


def test_unknown_layer_is_named_and_opaque_keeps_it():
    @keras.saving.register_keras_serializable(package="tests")
    class Doubler(keras.layers.Layer):
        def call(self, x):
            return 2.0 * x

    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, name="c1")(inputs)
    x = Doubler(name="double")(x)
    x = keras.layers.Conv2D(4, 3, name="c2")(x)
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))
    with pytest.raises(graph_mod.UnsupportedLayerError, match="'double' of type Doubler"):
        prune.analyse(model)
    graph = prune.analyse(model, opaque=("Doubler",))
    assert not graph.channels  # c1 feeds the opaque layer, c2 the output: nothing prunable


def test_removing_fixed_or_every_channel_is_refused():
    model, _ = _resnet8()
    graph = prune.analyse(model)
    with pytest.raises(ValueError, match="fixed"):
        prune.prune_channels(model, [min(graph.fixed)], graph=graph)
    whole = graph.channel_sets()[0]
    with pytest.raises(ValueError, match="every channel"):
        prune.prune_channels(model, whole, graph=graph)


def test_compress_command_writes_a_smaller_model(tmp_path):
    out = tmp_path / "small.keras"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([sys.executable, "-m", "kerasnets.tools.cli", "compress", "--model=resnet8",
                             "--method=bn", "--ratio=0.4", f"--out={out}"],
                            capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["macs_after"] < summary["macs_before"]
    loaded = keras.models.load_model(out)
    assert loaded.count_params() == summary["params_after"] + sum(
        int(np.prod(w.shape)) for w in loaded.non_trainable_weights)
    bad = subprocess.run([sys.executable, "-m", "kerasnets.tools.cli", "compress", "--model=resnet8",
                          "--method=l1", "--ratio=2", f"--out={out}"], capture_output=True, text=True,
                         env=env, timeout=600)
    assert bad.returncode == 2 and "(0, 1)" in bad.stderr
