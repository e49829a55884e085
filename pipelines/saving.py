"""Loading saved models: .keras/.h5 files (QAT models, the zoo's custom layers and Keras 3 files
included) and SavedModel folders wrapped as Keras models."""
from __future__ import annotations

import os


def load_keras(keras_file):
    """A .keras/.h5 model, QAT models and the zoo's custom layers included; a `.keras` file saved
    by Keras 3 is rebuilt as a tf_keras model (`kerasnets.from_keras3`)."""
    import tf_keras as keras

    from kerasnets import keras3
    from kerasnets.pipelines import quantize

    if not os.path.exists(keras_file):
        raise ValueError(f"`keras_file={keras_file}`: no such file")
    if keras3.is_keras3_file(keras_file):
        return keras3.from_keras3(keras3.load_file(keras_file, "keras_file"))
    try:
        with quantize.quantize_scope():
            return keras.models.load_model(keras_file, compile=False)
    except (OSError, ValueError, TypeError, KeyError) as error:
        raise ValueError(f"`keras_file={keras_file}` is not a loadable Keras model "
                         f"({type(error).__name__}: {str(error)[:600]})") from None


def load_saved_model(saved_model_dir):
    """Wrap a SavedModel's serving signature as a Keras model with a static input shape."""
    import tensorflow as tf
    import tf_keras as keras

    if not os.path.isfile(os.path.join(saved_model_dir, "saved_model.pb")):
        raise ValueError(f"`saved_model_dir={saved_model_dir}` holds no saved_model.pb")
    loaded = tf.saved_model.load(saved_model_dir)
    signature = loaded.signatures["serving_default"]
    (input_name, spec), = signature.structured_input_signature[1].items()
    output_name = next(iter(signature.structured_outputs))

    class SavedModelCall(keras.layers.Layer):  # export only: never serialised
        def call(self, x):
            return signature(**{input_name: x})[output_name]

    inputs = keras.Input(shape=spec.shape[1:], name=input_name)
    model = keras.Model(inputs, SavedModelCall(name="saved_model")(inputs),
                        name=os.path.basename(os.path.normpath(saved_model_dir)))
    model._kerasnets_saved_model = loaded  # keeps the variables alive
    return model


def create_at_size(name: str, input_size: int | None = None, classes: int | None = None):
    """Registry model `name` at a square `input_size` (keeping its channels), else at its default."""
    import kerasnets

    shape = None
    if input_size:
        shape = (input_size, input_size, kerasnets.model_info(name).input_shape[2])
    return kerasnets.create_model(name, input_shape=shape, classes=classes)
