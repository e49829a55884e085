"""Image classifiers as phone and board apps take them: the Android Task Library's and MediaPipe's
`ImageClassifier` accept only RGB input and uint8 or float input/output, while the int8 model for
TFLite Micro has int8 input/output (and a grayscale data set gives a one-channel model).

`app_tflite` converts a trained model to such a file:
- a one-channel model gets an RGB input whose first layer averages the three channels (a gray
  image given as RGB has three equal channels, so the model sees the same pixels);
- `io_type="uint8"`: full-integer int8 inside, uint8 input and output; the input's quantisation is
  set to the metadata's normalisation, so the raw 0-255 pixel the apps pass *is* the input
  (the apps normalise float inputs only);
- `io_type="float"`: int8 inside, float input and output (the apps normalise with the metadata);
- lowered for XNNPACK, the apps' CPU path (`kerasnets.pipelines.xnnpack.lower_for_xnnpack`): the
  int8 ops it has no int8 kernel for run as float islands inside it, and the rewrites that compute
  the same on faster kernels (depthwise multipliers, narrow convolutions, channel shuffles);
- image-classifier metadata (labels, normalisation, RGB) attached.
"""
from __future__ import annotations

import numpy as np

IO_TYPES = ("uint8", "float")


def rgb_model(model):
    """`model` if it takes 3 channels; for a one-channel model, a model taking RGB whose first
    layer (`rgb_to_gray`, a fixed 1x1 convolution) averages the channels."""
    import tf_keras as keras

    channels = model.input_shape[-1]
    if channels == 3:
        return model
    if channels != 1:
        raise ValueError(f"`model` takes {channels} channels: app image classifiers take RGB (3) or, "
                         "through a channel average, grayscale (1)")
    inputs = keras.Input(model.input_shape[1:-1] + (3,), name="rgb")
    gray = keras.layers.Conv2D(1, 1, use_bias=False, trainable=False, name="rgb_to_gray",
                               kernel_initializer=keras.initializers.Constant(1 / 3))(inputs)
    return keras.Model(inputs, model(gray), name=f"{model.name}_rgb")


def as_rgb(images: np.ndarray) -> np.ndarray:
    """Images N,H,W,C with C 1 or 3 as N,H,W,3 (a gray channel repeated)."""
    return images if images.shape[-1] == 3 else np.repeat(images, 3, axis=-1)


def app_tflite(model, calibration: np.ndarray, info, io_type: str = "uint8", *,
               int8_dot_product: bool = True) -> bytes:
    """The .tflite an app's image classifier takes (see the module doc); `info` is the
    metadata.ImageClassifierInfo (its `mean`/`std` are the pixel normalisation the model expects).
    `int8_dot_product`: whether the device's CPU has int8 dot products, as phones since Armv8.2
    (see xnnpack.lower_for_xnnpack)."""
    import dataclasses

    from kerasnets.pipelines import convert, metadata, xnnpack

    if io_type not in IO_TYPES:
        raise ValueError(f"`io_type` must be one of {IO_TYPES} (image-classifier apps refuse int8 "
                         f"input); got {io_type!r}")
    rgb = rgb_model(model)
    images = as_rgb(np.asarray(calibration))
    if io_type == "float":
        tflite = convert.export(rgb, "int8", images, io_type="float")
    else:
        tflite = pixel_input(convert.export(rgb, "int8", images, io_type="uint8"), info.mean, info.std)
    tflite = xnnpack.lower_for_xnnpack(tflite, int8_dot_product=int8_dot_product)
    channels = 3
    info = dataclasses.replace(info, mean=_per_channel(info.mean, channels), std=_per_channel(info.std, channels))
    return metadata.attach(tflite, info)


def _per_channel(values, channels):
    return tuple(values) * channels if len(values) == 1 else tuple(values)


def pixel_input(tflite: bytes, mean, std) -> bytes:
    """A uint8-input model whose input quantisation is (pixel - mean) / std, so that a raw 0-255
    pixel is the input. The converter's own uint8 scale comes from the calibration images' range
    (narrower than 0-255 unless an image holds both), which an app passing raw pixels would
    misread. The QUANTIZE op after the input requantises to the int8 scale inside, unchanged.
    The zero point is `mean` rounded: 127.5 becomes 128, half a pixel, a quarter of one int8
    step of the [-1, 1] input."""
    from tensorflow.lite.python import schema_py_generated as schema

    from kerasnets.pipelines import tflite_file

    if len(set(mean)) != 1 or len(set(std)) != 1:
        raise ValueError(f"a uint8 input has one scale: `mean` and `std` must be the same for every "
                         f"channel; got {mean} and {std} (use io_type='float')")
    model = tflite_file.unpack(tflite)
    graph = model.subgraphs[0]
    tensor = graph.tensors[graph.inputs[0]]
    if tensor.type != schema.TensorType.UINT8:
        raise ValueError("`tflite` must have a uint8 input (convert with io_type='uint8')")
    tensor.quantization.scale = [1.0 / float(std[0])]
    tensor.quantization.zeroPoint = [int(round(float(mean[0])))]
    return tflite_file.pack(model)
