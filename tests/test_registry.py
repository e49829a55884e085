"""The registry's public API: lookup, wildcards, published figures and argument errors."""
import pytest

import kerasnets


def test_list_models_wildcards():
    everything = kerasnets.list_models()
    assert everything == sorted(everything)
    assert kerasnets.list_models("ghostnet_*") == ["ghostnet_030", "ghostnet_050", "ghostnet_100",
                                                   "ghostnet_130"]
    assert all(name.endswith("_cifar") for name in kerasnets.list_models("*_cifar"))
    assert kerasnets.list_models("no_such_*") == []


def test_model_info_has_published_figures():
    info = kerasnets.model_info("resnet8")
    assert info.input_shape == (32, 32, 3) and info.classes == 10
    assert info.params == pytest.approx(78e3, rel=0.05) and info.macs == pytest.approx(12.5e6, rel=0.05)
    assert info.paper and info.source
    assert info.as_dict()["name"] == "resnet8"


def test_unknown_name_suggests_close_names():
    with pytest.raises(ValueError, match=r"unknown model 'ghostnet_10'.*ghostnet_100"):
        kerasnets.create_model("ghostnet_10")
    with pytest.raises(ValueError, match="unknown model"):
        kerasnets.model_info("definitely_not_a_net")


@pytest.mark.parametrize("classes", [0, -3, 2.5, True])
def test_bad_classes(classes):
    with pytest.raises(ValueError, match=f"classes must be an int >= 1, got {classes!r}"):
        kerasnets.create_model("resnet8", classes=classes)


def test_input_too_small_names_argument_and_value():
    minimum = kerasnets.model_info("mobilenet_v2_100").min_size
    with pytest.raises(ValueError, match=r"input_shape=\(16, 16, 3\) is too small for mobilenet_v2_100"):
        kerasnets.create_model("mobilenet_v2_100", input_shape=(16, 16, 3))
    assert minimum > 16
    with pytest.raises(ValueError, match="input_shape must be"):
        kerasnets.create_model("resnet8", input_shape=(32, 32))


def test_bad_pooling():
    with pytest.raises(ValueError, match="pooling must be one of"):
        kerasnets.create_model("resnet8", include_top=False, pooling="mean")


def test_defaults_and_overrides():
    model = kerasnets.create_model("resnet8")
    assert model.input_shape == (None, 32, 32, 3) and model.output_shape == (None, 10)
    custom = kerasnets.create_model("resnet8", input_shape=(48, 40, 1), classes=3)
    assert custom.input_shape == (None, 48, 40, 1) and custom.output_shape == (None, 3)


@pytest.mark.parametrize("name, accepted", [
    ("resnet8", "no variant arguments"),
    ("mobilenet_v2_100", "the variant arguments dropout"),
    ("ghost_resnet56_cifar", "the variant arguments dw_kernel and ratio"),
    ("condensenet50_cifar", "the variant arguments condensing and group_lasso"),
    ("mgiad_cifar", "the variant arguments group_size and width"),
])
def test_one_message_for_unknown_keyword_arguments(name, accepted):
    with pytest.raises(TypeError) as error:
        kerasnets.create_model(name, widht=2, colour="red")
    assert str(error.value) == (
        f"{name} got unexpected keyword arguments colour and widht; it accepts input_shape, "
        f"classes, include_top, pooling, classifier_activation and {accepted}")
    assert kerasnets.model_options(name) == tuple(
        () if accepted.startswith("no") else accepted.split("arguments ")[1].split(" and "))


def test_figure_source_is_declared_for_every_model():
    for name in kerasnets.list_models():
        info = kerasnets.model_info(name)
        assert info.as_dict()["figure_source"] in ("paper", "official code", "this implementation")
    assert kerasnets.model_info("mgic_resnet20_cifar").figure_source == "this implementation"
    assert kerasnets.model_info("resnet8").figure_source == "official code"
    assert kerasnets.model_info("ghostnet_100").figure_source == "paper"


def test_register_variants_checks_its_table():
    from kerasnets import registry

    def builder(**kwargs):
        raise AssertionError("not built")

    with pytest.raises(ValueError, match=r"fixes \['classes'\]"):
        registry.register_variants(builder, [registry.Variant("t_x", dict(classes=3), 1, 1)],
                                   paper="p", input_shape=(8, 8, 3))
    with pytest.raises(ValueError, match="figure_source of 't_y' must be one of"):
        registry.register_variants(builder, [registry.Variant("t_y", {}, 1, 1)], paper="p",
                                   input_shape=(8, 8, 3), figure_source="folklore")
    with pytest.raises(ValueError, match="'resnet8' is registered twice"):
        registry.register_variants(builder, [registry.Variant("resnet8", {}, 1, 1)], paper="p",
                                   input_shape=(8, 8, 3))
    assert "t_x" not in kerasnets.list_models() and "t_y" not in kerasnets.list_models()


def test_register_model_still_registers_a_user_builder():
    from kerasnets import registry

    @kerasnets.register_model(paper="user", params=0, macs=0, input_shape=(8, 8, 3), classes=2,
                              min_size=8)
    def user_net_for_registry_test(*, input_shape, classes, include_top, pooling,
                                   classifier_activation, **kwargs):
        registry.reject_extra_kwargs("user_net_for_registry_test", kwargs)
        inputs = kerasnets.blocks.model_input(input_shape)
        x = kerasnets.blocks.classifier_head(inputs, include_top=include_top, pooling=pooling,
                                             classes=classes,
                                             classifier_activation=classifier_activation)
        return kerasnets.blocks.keras.Model(inputs, x, name="user_net_for_registry_test")

    try:
        assert kerasnets.create_model("user_net_for_registry_test").output_shape == (None, 2)
        assert kerasnets.model_info("user_net_for_registry_test").figure_source == "paper"
        with pytest.raises(TypeError, match="user_net_for_registry_test got unexpected keyword "
                                            "argument width; .* and no variant arguments"):
            kerasnets.create_model("user_net_for_registry_test", width=2)
    finally:
        for table in (registry._BUILDERS, registry._INFOS, registry._OPTIONS):
            table.pop("user_net_for_registry_test", None)


def test_every_custom_layer_lives_in_layers_and_declares_its_roles():
    import tf_keras as keras
    from kerasnets import layers

    zoo_layers = {cls for cls in keras.saving.get_custom_objects().values()
                  if isinstance(cls, type) and issubclass(cls, keras.layers.Layer)
                  and cls.__module__.split(".")[:2] != ["kerasnets", "pipelines"]
                  and cls.__module__.startswith("kerasnets")}
    assert zoo_layers == set(layers.CUSTOM_OBJECTS.values())
    for cls in layers.CUSTOM_OBJECTS.values():
        assert cls.__module__ == "kerasnets.layers", cls
        assert cls.prune_role in ("elementwise", "merge", "indexed", "fixed") and cls.tflite_ops, cls
        assert isinstance(cls.qat_spec, tuple) and len(cls.qat_spec) == 2, cls
