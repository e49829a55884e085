"""ThreshNet: the threshold mechanism's per-layer connections in the built graph, and the official
repository's figures (torchstat convention, 1000- and 10-class heads)."""
import re

import numpy as np
import pytest
import tf_keras as keras

import kerasnets
from kerasnets import threshnet

L = keras.layers
SMALL = (64, 64, 3)  # twice the total stride; parameters do not depend on the input size


def _inbound(layer):
    inbound = layer.inbound_nodes[0].inbound_layers
    return list(inbound) if isinstance(inbound, (list, tuple)) else [inbound]


def sources(model, layer_name, block):
    """Which outputs of `block` reach layer `layer_name`, in concatenation order: j for layer j
    of the block, 0 for the block input (concatenations are looked through)."""
    pattern = re.compile(rf"block{block}_layer(\d+)_")
    found = []

    def walk(layer):
        if isinstance(layer, L.Concatenate):
            for src in _inbound(layer):
                walk(src)
            return
        match = pattern.match(layer.name)
        found.append(int(match.group(1)) if match else 0)

    for src in _inbound(model.get_layer(layer_name)):
        walk(src)
    return found


def paper_links(layer, *, dense):
    """The rule written out apart from the builder: a dense layer reads the block input and every
    earlier layer; harmonic layer k reads k - 2^n for each 2^n dividing k, nearest first."""
    if dense:
        return list(range(layer))
    return [layer - 2 ** n for n in range(layer.bit_length()) if layer % 2 ** n == 0]


def block_output_links(layers, *, dense):
    """A dense block passes on everything; a harmonic one its odd layers and its last layer."""
    if dense:
        return list(range(layers + 1))
    return [j for j in range(1, layers + 1) if j % 2 == 1 or j == layers]


def layer_reader(model, block, layer):
    """The first op of a block layer, which reads its input: BN (dense) or conv (harmonic)."""
    existing = {each.name for each in model.layers}
    for name in (f"block{block}_layer{layer}_1_bn", f"block{block}_layer{layer}_conv"):
        if name in existing:
            return name
    raise AssertionError(f"block {block} has no layer {layer}")


def assert_threshold_connections(model, stages, dense_blocks):
    for block, stage in enumerate(stages, start=1):
        dense = block in dense_blocks
        for layer in range(1, stage.layers + 1):
            got = sources(model, layer_reader(model, block, layer), block)
            assert got == paper_links(layer, dense=dense), (block, layer)
        got = sources(model, f"transition{block}_conv", block)
        assert got == block_output_links(stage.layers, dense=dense), block


def torchstat_flops(model):
    """FLOPs as torchstat (used by the official tables) counts them: conv/linear MACs (+ bias)
    plus 2 per BatchNorm element, 1 per ReLU element and 1 per pooled input element."""
    total = 0
    for layer in model.layers:
        out = int(np.prod(layer.output.shape[1:]))
        if isinstance(layer, L.Conv2D):
            kh, kw = layer.kernel_size
            total += out * kh * kw * layer.input.shape[-1] // layer.groups
            total += out if layer.use_bias else 0
        elif isinstance(layer, L.Dense):
            total += int(np.prod(layer.kernel.shape))
        elif isinstance(layer, L.BatchNormalization):
            total += 2 * out
        elif isinstance(layer, L.ReLU):
            total += out
        elif isinstance(layer, L.MaxPooling2D):
            total += int(np.prod(layer.input.shape[1:]))
    return total


def test_threshold_splits_blocks_into_dense_and_harmonic():
    assert [threshnet.connects_densely(b, 4) for b in range(1, 6)] == [True] * 3 + [False] * 2
    assert threshnet.layer_links(4, dense=True) == paper_links(4, dense=True) == [0, 1, 2, 3]
    # harmonic layer k keeps k - 2^n for every 2^n dividing k: each layer drops a different set
    assert [threshnet.layer_links(k, dense=False) for k in (1, 2, 3, 4, 6, 8)] == [
        [0], [1, 0], [2], [3, 2, 0], [5, 4], [7, 6, 4, 0]]
    for k in range(1, 33):
        assert threshnet.layer_links(k, dense=False) == paper_links(k, dense=False)


@pytest.fixture(scope="module")
def cifar_head_models():
    """Each variant once, with the official code's 10-class head, at the small input."""
    return {name: kerasnets.create_model(name, input_shape=SMALL, classes=10)
            for name in ("threshnet79", "threshnet95")}


def flops_at_224(model_at_64):
    """torchstat FLOPs at 224x224 from a model built at 64x64: every feature map is 3.5x as wide
    and high (both sizes are multiples of the total stride 32), so all but the classifier's count
    scale by 3.5^2."""
    classifier = sum(int(np.prod(layer.kernel.shape)) for layer in model_at_64.layers
                     if isinstance(layer, L.Dense))
    return (torchstat_flops(model_at_64) - classifier) * 3.5 ** 2 + classifier


def test_threshnet79_graph_follows_the_threshold_rule(cifar_head_models):
    model = cifar_head_models["threshnet79"]
    config = threshnet.CONFIGS["threshnet79"]
    assert config.threshold == 4
    assert_threshold_connections(model, config.stages, dense_blocks={1, 2, 3})
    assert model.get_layer("transition5_relu").output.shape[1:] == (2, 2, 960)


@pytest.mark.parametrize("name, params_10, flops", [
    ("threshnet79", 14.31e6, 3.46e9),  # README 14.31M; this structure (the official code) 14.37M
    ("threshnet95", 16.19e6, 4.07e9),
])
def test_official_readme_figures(cifar_head_models, name, params_10, flops):
    """The current README's parameter counts (10-class head) and torchstat FLOPs at 224x224
    (its 1000-class classifier adds 0.03%)."""
    model = cifar_head_models[name]
    assert kerasnets.profile(model)["params"] == pytest.approx(params_10, rel=0.005)
    assert flops_at_224(model) == pytest.approx(flops, rel=0.005)


def test_rejects_unknown_variant_arguments():
    with pytest.raises(TypeError, match="threshnet79 got unexpected keyword argument width; it "
                                        "accepts .* and no variant arguments"):
        kerasnets.create_model("threshnet79", input_shape=SMALL, width=2)
