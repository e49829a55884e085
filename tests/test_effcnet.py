"""EffCNet / CondenseNeXt: the alias, condensing its group-wise pointwise convs, the 3 MB bound,
and CondenseNeXtV2's self-querying augmentation as a tf.data function."""
import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

import kerasnets
from kerasnets import condensenet as cn
from kerasnets.pipelines import augment
from conftest import assert_same_outputs, calibrate_batchnorm

SHAPE = (32, 32, 3)
THREE_MB = 3_000_000  # the papers' bound on the trained model file


def _structure(model):
    return [(layer.name, type(layer).__name__, [w.shape for w in layer.weights]) for layer in model.layers]


def test_condensenext_is_an_alias_of_effcnet():
    effcnet = kerasnets.create_model("effcnet_cifar")
    alias = kerasnets.create_model("condensenext_cifar")
    assert alias.name == "condensenext_cifar"
    assert _structure(alias) == _structure(effcnet)


def test_units_are_depthwise_separable_with_grouped_pointwise_and_shuffle():
    model = kerasnets.create_model("effcnet_cifar")
    config = kerasnets.effcnet.CIFAR
    depthwise = model.get_layer("block2_layer3_1_dw")
    assert isinstance(depthwise, keras.layers.DepthwiseConv2D) and depthwise.depth_multiplier == 2
    # index, grouped pointwise conv and shuffle in one layer: the grouped kernel, run dense
    pointwise = model.get_layer("block2_layer3_1_lgc_conv")
    assert isinstance(pointwise, kerasnets.layers.IndexedGroupConv)
    assert pointwise.kernel_size == (1, 1) and pointwise.groups == config.cardinality
    assert pointwise.kernel.shape[2] == depthwise.output.shape[-1] // config.cardinality
    assert model.get_layer("block2_layer3_2_conv").groups == config.groups_3x3


def test_condensed_effcnet_matches_its_training_time_model(digit_batches):
    model = kerasnets.create_model("effcnet_cifar", condensing=True, classifier_activation="linear")
    cn.finish_condensation(model)
    images = digit_batches(SHAPE, 4)
    calibrate_batchnorm(model, images)
    condensed = cn.condense(model)
    assert_same_outputs(condensed(images, training=False), model(images, training=False))
    registered = kerasnets.create_model("effcnet_cifar", classifier_activation="linear")
    assert _structure(condensed) == _structure(registered)


def test_trained_model_files_stay_under_3mb(tmp_path):
    """The papers' bound is on the trained float model file: both forms, as float32 .keras."""
    training = kerasnets.create_model("effcnet_cifar", condensing=True)
    cn.finish_condensation(training)
    for model, file in ((training, "training.keras"), (cn.condense(training), "condensed.keras")):
        model.save(tmp_path / file)
        assert (tmp_path / file).stat().st_size < THREE_MB


# --- self-querying augmentation (CondenseNeXtV2) ----------------------------------------------

def _photo(seed=0, shape=(32, 32, 3)):
    """A smooth colour gradient plus noise: every 8-bit operation has something to change."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(40, 200, shape[0])[:, None, None] + np.linspace(0, 30, shape[2])[None, None, :]
    image = ramp + rng.normal(0, 12, shape)
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def _apply(image, name, magnitude_bin=None, negate=False):
    out = augment.apply_operation(tf.constant(image, tf.float32), name, magnitude_bin, negate=negate)
    return out.numpy().astype(np.int64)


def test_photometric_operations_match_pil():
    from PIL import Image, ImageEnhance, ImageOps

    image = _photo()
    pil = Image.fromarray(image)
    exact = {
        ("Invert", None): ImageOps.invert(pil),
        ("Solarize", 5): ImageOps.solarize(pil, augment.MAGNITUDES["Solarize"][0][5]),
        ("Posterize", 9): ImageOps.posterize(pil, 4),
        ("AutoContrast", None): ImageOps.autocontrast(pil),
        ("Equalize", None): ImageOps.equalize(pil),
    }
    for (name, magnitude_bin), expected in exact.items():
        np.testing.assert_array_equal(_apply(image, name, magnitude_bin), np.asarray(expected), err_msg=name)
    # enhancements blend in float and round: PIL truncates, so allow one 8-bit step
    enhancers = {"Brightness": ImageEnhance.Brightness, "Color": ImageEnhance.Color,
                 "Contrast": ImageEnhance.Contrast, "Sharpness": ImageEnhance.Sharpness}
    for name, enhancer in enhancers.items():
        expected = np.asarray(enhancer(pil).enhance(1 + augment.MAGNITUDES[name][0][7])).astype(np.int64)
        np.testing.assert_allclose(_apply(image, name, 7), expected, atol=1, err_msg=name)


def test_geometric_operations_move_pixels_and_fill():
    image = _photo()
    shift = round(augment.MAGNITUDES["TranslateX"][0][9] * 32)  # 45% of the width
    moved = _apply(image, "TranslateX", 9)
    np.testing.assert_array_equal(moved[:, :32 - shift], image[:, shift:])
    assert (moved[:, 32 - shift:] == 128).all()
    assert (_apply(image, "Rotate", 0) == image).all()  # bin 0: no rotation
    sheared = _apply(image, "ShearY", 9, negate=True)
    np.testing.assert_array_equal(sheared[:, 0], image[:, 0])  # x = 0 stays put
    assert not (sheared == image).all()


def test_each_image_queries_one_sub_policy():
    invert_always = (("Invert", 1.0, None), ("Solarize", 0.0, 0))
    never = (("Equalize", 0.0, None), ("Invert", 0.0, None))
    image = _photo()
    outputs = [augment.self_querying_augment(tf.constant(image), (invert_always, never)).numpy()
               for _ in range(24)]
    inverted = [np.array_equal(out, 255 - image) for out in outputs]
    unchanged = [np.array_equal(out, image) for out in outputs]
    assert all(a != b for a, b in zip(inverted, unchanged))  # exactly one sub-policy each time
    assert any(inverted) and any(unchanged)


def test_self_querying_augment_runs_in_tf_data_on_images_and_batches():
    images = np.stack([_photo(seed) for seed in range(16)])
    single = tf.data.Dataset.from_tensor_slices(images).map(augment.self_querying_augment).batch(16)
    augmented = next(iter(single)).numpy()
    assert augmented.dtype == np.uint8 and augmented.shape == images.shape
    changed = [not np.array_equal(a, b) for a, b in zip(augmented, images)]
    assert 2 <= sum(changed) <= 15  # the CIFAR-10 policy changes most images, not all
    batches = tf.data.Dataset.from_tensor_slices(images.astype(np.float32)).batch(8)
    batch = next(iter(batches.map(augment.self_querying_augment))).numpy()
    assert batch.dtype == np.float32 and batch.shape == (8, 32, 32, 3)
    assert batch.min() >= 0 and batch.max() <= 255 and np.array_equal(batch, np.round(batch))


@pytest.mark.parametrize("policy, message", [
    ((), "at least one sub-policy"),
    (((("Blur", 0.5, 3),),), "unknown augmentation operation 'Blur'"),
    (((("Rotate", 0.5, None),),), "needs a magnitude bin"),
    (((("Invert", 1.5, None),),), r"must be in \[0, 1\]"),
])
def test_policies_are_checked(policy, message):
    with pytest.raises(ValueError, match=message):
        augment.self_querying_augment(tf.zeros((8, 8, 3)), policy)
