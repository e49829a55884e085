"""The pruning engine's extension points: a criterion registered through the public API, layer
handlers looked up through the class MRO, a user's handler, and node order from the public graph."""
import numpy as np
import pytest
import tf_keras as keras

import kerasnets
from kerasnets.pipelines import data, prune
from kerasnets.pipelines.prune import criteria, functional, handlers
from conftest import assert_same_outputs, calibrate_batchnorm

L = keras.layers


def _random_scores(graph, context):
    rng = np.random.default_rng(0)
    return {channel: float(rng.random()) for channel in graph.channels}


@pytest.fixture
def random_criterion():
    criterion = prune.register_criterion(prune.Criterion(
        "random", "seeded random importance (a test criterion)", targetable=True,
        scores=_random_scores))
    yield criterion
    prune.unregister_criterion("random")


def test_a_registered_criterion_prunes_like_the_masked_original(random_criterion):
    assert "random" in prune.METHODS and "random" in prune.STRUCTURED and "random" in prune.TARGETABLE
    assert "random" not in prune.NEEDS_DATA and prune.methods()["random"].startswith("seeded random")
    model = kerasnets.create_model("resnet8", input_shape=(32, 32, 3), classes=10)
    images = data.digits_images((32, 32, 3), 8)[0]
    calibrate_batchnorm(model, images)
    pruned, summary = prune.compress(model, "random", ratio=0.3)
    assert summary["method"] == "random" and summary["ratio"] == 0.3
    assert pruned.count_params() < model.count_params()
    assert summary["params_after"] < summary["params_before"]
    graph = prune.analyse(model)
    remove = prune.select(graph, _random_scores(graph, None), 0.3)
    assert len(remove) >= int(0.25 * len(graph.channels))
    masked = prune.mask_channels(model, remove, graph=graph)
    assert_same_outputs(pruned(images, training=False), masked(images, training=False), atol=1e-4)


def test_the_registry_refuses_duplicates_and_names_the_choices(random_criterion):
    with pytest.raises(ValueError, match="'random' is already registered"):
        prune.register_criterion(random_criterion)
    with pytest.raises(ValueError, match="`method` must be one of magnitude, m_by_n, l1"):
        criteria.get("nope")
    with pytest.raises(ValueError, match="exactly one of `scores` or `apply`"):
        prune.Criterion("empty", "neither")


def test_methods_lists_every_method_with_a_description():
    listed = prune.methods()
    assert tuple(listed) == prune.METHODS == (*prune.SPARSITY, *prune.STRUCTURED)
    assert all(isinstance(text, str) and text for text in listed.values())


def test_handlers_follow_the_class_mro_and_prune_role():
    class Difference2(L.Subtract):
        pass

    class Tagged(L.Layer):
        prune_role = "elementwise"

    class Untagged(Tagged):
        pass

    assert handlers.handler_for(Difference2()) is handlers.MERGE
    assert handlers.handler_for(Untagged()) is handlers.PASS_THROUGH  # inherited role
    assert isinstance(handlers.handler_for(L.Conv2DTranspose(2, 3)), handlers.Unsupported)
    assert handlers.handler_for(kerasnets.layers.HardSwish()) is handlers.PASS_THROUGH
    assert "Conv2D" in prune.graph.supported_layers()


def test_a_registered_handler_makes_a_custom_layer_prunable():
    class Doubler(L.Layer):
        def call(self, x):
            return 2.0 * x

    inputs = keras.Input((8, 8, 3))
    x = L.Conv2D(8, 3, name="c1")(inputs)
    x = L.Conv2D(4, 3, name="c2")(Doubler(name="double")(x))
    model = keras.Model(inputs, L.GlobalAveragePooling2D()(x))
    with pytest.raises(prune.UnsupportedLayerError, match="Pass `opaque=\\('Doubler',\\)`"):
        prune.analyse(model)
    prune.register_handler(Doubler, handlers.PassThrough())
    try:
        graph = prune.analyse(model)
        assert len(graph.channels) == 8  # c1's filters, read by c2 through the doubler
    finally:
        prune.unregister_handler(Doubler)
    with pytest.raises(TypeError, match="handler must be"):
        prune.register_handler(Doubler, object())


def test_a_shared_layer_ties_its_calls_and_node_order_is_the_models_own():
    inputs = keras.Input((8, 8, 4))
    shared = L.Conv2D(6, 1, name="shared")
    a = shared(L.Conv2D(4, 1, name="left")(inputs))
    b = shared(L.Conv2D(4, 1, name="right")(inputs))
    model = keras.Model(inputs, L.Dense(2)(L.GlobalAveragePooling2D()(L.Add()([a, b]))))
    nodes = functional.nodes_in_order(model)
    assert len(nodes) == sum(len(layer.inbound_nodes) for layer in model.layers)
    assert [n.outbound_layer.name for n in nodes].count("shared") == 2
    graph = prune.analyse(model)
    left, right = (graph.roots(graph.layer_out[n]) for n in ("left", "right"))
    assert (left == right).all()  # the shared conv reads both through the same weights
    images = np.random.default_rng(0).normal(size=(2, 8, 8, 4)).astype("float32")
    remove = list(left[:2])
    assert_same_outputs(prune.prune_channels(model, remove, graph=graph)(images),
                        prune.mask_channels(model, remove, graph=graph)(images), atol=1e-5)


def test_nested_and_multi_output_layers_are_named():
    inner_in = keras.Input((4,))
    inner = keras.Model(inner_in, L.Dense(3)(inner_in), name="inner")
    inputs = keras.Input((4,))
    with pytest.raises(prune.UnsupportedLayerError, match="'inner' is a nested model"):
        prune.analyse(keras.Model(inputs, inner(inputs)))
    with pytest.raises(TypeError, match="functional tf_keras Model"):
        prune.analyse(keras.Sequential())
