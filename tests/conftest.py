"""Shared test helpers: small real inputs and BatchNorm statistics that make int8 outputs informative."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tf_keras as keras  # noqa: E402

import kerasnets  # noqa: E402
from kerasnets.pipelines import data  # noqa: E402


def small_input_shape(name):
    """Input for the fast checks: the default where it is CIFAR-sized, else twice the minimum."""
    info = kerasnets.model_info(name)
    height = info.input_shape[0]
    side = height if height <= 64 else max(2 * info.min_size, 32)
    return (side, side, info.input_shape[2])


def calibrate_batchnorm(model, images):
    """Set every BatchNorm's moving statistics to those of one forward pass over `images`, so an
    untrained net has well-scaled activations (random-init statistics make int8 outputs flat)."""
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    saved = [layer.momentum for layer in norms]
    for layer in norms:
        layer.momentum = 0.0
    model(images, training=True)
    for layer, momentum in zip(norms, saved):
        layer.momentum = momentum


@pytest.fixture(scope="session")
def digit_batches():
    cache = {}

    def get(shape, count=8):
        key = (tuple(shape), count)
        if key not in cache:
            cache[key] = data.digits_images(shape, count)[0]
        return cache[key]

    return get


def assert_same_outputs(a, b, atol=1e-5):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=atol, rtol=1e-4)
