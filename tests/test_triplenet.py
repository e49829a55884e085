"""TripleNet: dense, harmonic and residual connections in the built graph, and the official
README's torchstat FLOPs."""
import pytest

import kerasnets
from kerasnets import triplenet
from test_threshnet import SMALL, assert_threshold_connections, flops_at_224


@pytest.fixture(scope="module")
def small_models():
    return {name: kerasnets.create_model(name, input_shape=SMALL)
            for name in ("triplenet_s", "triplenet_b")}


@pytest.mark.parametrize("name, widths", [
    ("triplenet_s", (160, 240)),
    ("triplenet_b", (160, 240, 360)),
])
def test_three_kinds_of_connection(small_models, name, widths):
    model = small_models[name]
    config = triplenet.CONFIGS[name]
    assert_threshold_connections(model, config.stages, dense_blocks={1})
    channels = 320  # transition 4
    for j, planes in enumerate(widths, start=1):
        prefix = f"block5_layer{j}"
        assert model.get_layer(f"{prefix}_1_conv").filters == planes
        assert model.get_layer(f"{prefix}_3_conv").filters == 3 * planes == 3 * channels // 2
        add = model.get_layer(f"{prefix}_add")
        add_inputs = [layer.name for layer in add.inbound_nodes[0].inbound_layers]
        assert add_inputs == [f"{prefix}_shortcut_bn", f"{prefix}_3_bn"]
        channels = 3 * planes
    assert f"block5_layer{len(widths) + 1}_add" not in {layer.name for layer in model.layers}
    assert model.get_layer("head_pool").output.shape[-1] == channels


@pytest.mark.parametrize("name, flops", [("triplenet_s", 4.17e9), ("triplenet_b", 4.29e9)])
def test_readme_torchstat_flops(small_models, name, flops):
    assert flops_at_224(small_models[name]) == pytest.approx(flops, rel=0.005)
