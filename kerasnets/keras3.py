"""Keras 3 models in: a Keras 3 functional or Sequential model of standard layers (or its saved
file) rebuilt as a tf_keras (Keras 2) functional model with the same graph, layer names and
weights, so that pruning, TFMOT's QAT, the int8 conversion and TFLite Micro take it.

Every supported layer class has its arguments mapped explicitly below. Keras 3 configs are not
passed through: their dtype policies and initialiser serialisation differ from tf_keras' and some
arguments are renamed (LeakyReLU's `negative_slope` is tf_keras' `alpha`), and a few activations
differ or are missing (tf_keras has no `relu6`; its `hard_sigmoid` is another function). Weights
are copied layer by layer, so initialisers are not carried over; regularisers are (L1, L2, L1L2).
Keras 3 itself is imported only to read a model, never by the rest of the package.
"""
from __future__ import annotations

import json
import os
import zipfile

import numpy as np
import tf_keras

from kerasnets import layers as zoo_layers

L = tf_keras.layers

# Keras 3 activation name -> the same function's tf_keras name
_ACTIVATIONS = {"linear": "linear", "relu": "relu", "sigmoid": "sigmoid", "tanh": "tanh",
                "softmax": "softmax", "silu": "swish", "swish": "swish", "elu": "elu", "selu": "selu",
                "softplus": "softplus", "softsign": "softsign", "gelu": "gelu", "mish": "mish",
                "exponential": "exponential"}
# Keras 3 activations that tf_keras has only as layers: a layer's own activation becomes a layer
# after it, named `<layer>_<activation>`
_ACTIVATION_LAYERS = {"relu6": lambda name: L.ReLU(6.0, name=name),
                      "hard_sigmoid": lambda name: zoo_layers.HardSigmoid(name=name),
                      "hard_silu": lambda name: zoo_layers.HardSwish(name=name),
                      "hard_swish": lambda name: zoo_layers.HardSwish(name=name)}
_REGULARIZERS = ("L1", "L2", "L1L2")


def _activation(value, where):
    """(tf_keras activation name, None) or ("linear", layer factory) for a Keras 3 activation."""
    if isinstance(value, str) and value in _ACTIVATIONS:
        return _ACTIVATIONS[value], None
    if isinstance(value, str) and value in _ACTIVATION_LAYERS:
        return "linear", _ACTIVATION_LAYERS[value]
    known = sorted(_ACTIVATIONS) + sorted(_ACTIVATION_LAYERS)
    raise ValueError(f"{where}: activation {value!r} has no tf_keras equivalent; supported: {', '.join(known)}")


def _regularizer(value, where):
    if value is None:
        return None
    if isinstance(value, dict) and value.get("class_name") in _REGULARIZERS:
        return tf_keras.regularizers.get({"class_name": value["class_name"], "config": value["config"]})
    raise ValueError(f"{where}: regularizer {value!r} is not one of {', '.join(_REGULARIZERS)}")


def _plain(value):
    """A scalar or list from a number or array (Rescaling's scale/offset)."""
    return float(value) if np.ndim(value) == 0 else np.asarray(value, np.float32).tolist()


def _weights(c, where, *names):
    """tf_keras regulariser arguments for the named weights; constraints are refused."""
    out = {}
    for name in names:
        if c.get(f"{name}_constraint") is not None:
            raise ValueError(f"{where}: {name}_constraint is not carried over; remove it before converting")
        out[f"{name}_regularizer"] = _regularizer(c.get(f"{name}_regularizer"), where)
    out["activity_regularizer"] = _regularizer(c.get("activity_regularizer"), where)
    return out


def _conv(c, *, filters=True, depth_multiplier=False):
    """Arguments shared by Conv2D, DepthwiseConv2D and SeparableConv2D."""
    args = dict(kernel_size=c["kernel_size"], strides=c["strides"], padding=c["padding"],
                dilation_rate=c["dilation_rate"], use_bias=c["use_bias"])
    if filters:
        args["filters"] = c["filters"]
    if depth_multiplier:
        args["depth_multiplier"] = c["depth_multiplier"]
    return args


# Keras 3 class name -> (tf_keras class, Keras 3 config -> tf_keras arguments); `where` names the
# layer in errors. A layer's own activation is handled in `_layer`.
_MAPPING = {
    "Conv2D": (L.Conv2D, lambda c, w: dict(_conv(c), groups=c.get("groups", 1),
                                            **_weights(c, w, "kernel", "bias"))),
    "DepthwiseConv2D": (L.DepthwiseConv2D, lambda c, w: dict(
        _conv(c, filters=False, depth_multiplier=True), **_weights(c, w, "depthwise", "bias"))),
    "SeparableConv2D": (L.SeparableConv2D, lambda c, w: dict(
        _conv(c, depth_multiplier=True), **_weights(c, w, "depthwise", "pointwise", "bias"))),
    "Dense": (L.Dense, lambda c, w: dict(units=c["units"], use_bias=c["use_bias"],
                                          **_weights(c, w, "kernel", "bias"))),
    "BatchNormalization": (L.BatchNormalization, lambda c, w: dict(
        axis=c["axis"], momentum=c["momentum"], epsilon=c["epsilon"], center=c["center"],
        scale=c["scale"], **_weights(c, w, "beta", "gamma"))),
    "Activation": (L.Activation, lambda c, w: {}),  # the activation itself: `_layer`
    "ReLU": (L.ReLU, lambda c, w: dict(max_value=c["max_value"], negative_slope=c["negative_slope"],
                                      threshold=c["threshold"])),
    "LeakyReLU": (L.LeakyReLU, lambda c, w: dict(alpha=c["negative_slope"])),
    "Softmax": (L.Softmax, lambda c, w: dict(axis=c["axis"])),
    "MaxPooling2D": (L.MaxPooling2D, lambda c, w: dict(pool_size=c["pool_size"], strides=c["strides"],
                                                       padding=c["padding"])),
    "AveragePooling2D": (L.AveragePooling2D, lambda c, w: dict(
        pool_size=c["pool_size"], strides=c["strides"], padding=c["padding"])),
    "GlobalAveragePooling2D": (L.GlobalAveragePooling2D, lambda c, w: dict(keepdims=c["keepdims"])),
    "GlobalMaxPooling2D": (L.GlobalMaxPooling2D, lambda c, w: dict(keepdims=c["keepdims"])),
    "ZeroPadding2D": (L.ZeroPadding2D, lambda c, w: dict(padding=c["padding"])),
    "Add": (L.Add, lambda c, w: {}),
    "Multiply": (L.Multiply, lambda c, w: {}),
    "Concatenate": (L.Concatenate, lambda c, w: dict(axis=c["axis"])),
    "Dropout": (L.Dropout, lambda c, w: dict(rate=c["rate"], noise_shape=c["noise_shape"], seed=c["seed"])),
    "Flatten": (L.Flatten, lambda c, w: {}),
    "Reshape": (L.Reshape, lambda c, w: dict(target_shape=c["target_shape"])),
    # constants from the live layer (below): Keras 3 may file them as serialised arrays
    "Rescaling": (L.Rescaling, lambda c, w: {}),
    "Normalization": (L.Normalization, lambda c, w: dict(axis=c["axis"], invert=c["invert"])),
}
SUPPORTED = ("InputLayer", *_MAPPING)


def _layer(layer, c):
    """(tf_keras layer, its activation layer or None, the Keras 3 weights to copy into it)."""
    class_name = type(layer).__name__
    where = f"layer {layer.name!r} ({class_name})"
    if c.get("data_format", "channels_last") != "channels_last":
        raise ValueError(f"{where}: data_format {c['data_format']!r}; only channels_last converts to TFLite")
    if c.get("lora_rank"):
        raise ValueError(f"{where}: LoRA weights are not carried over; merge them first")
    if getattr(layer.dtype_policy, "quantization_mode", None):
        raise ValueError(f"{where}: quantised Keras 3 layers ({layer.dtype_policy.name}) are not "
                         "carried over; convert the float model")
    tf_class, arguments = _MAPPING[class_name]
    args = dict(arguments(c, where), name=layer.name, trainable=c.get("trainable", True))
    weights = layer.get_weights()
    after = None
    if class_name == "Activation":
        activation, after = _activation(c["activation"], where)
        if after is not None:  # the layer itself is the activation, under its own name
            return after(layer.name), None, weights
        args["activation"] = activation
    elif "activation" in c:
        args["activation"], factory = _activation(c["activation"], where)
        after = factory and factory(f"{layer.name}_{c['activation']}")
    if class_name == "Rescaling":
        args.update(scale=_plain(layer.scale), offset=_plain(layer.offset))
    if class_name == "Normalization":  # adapted or given, the statistics become constants
        args.update(mean=np.asarray(layer.mean), variance=np.asarray(layer.variance))
        weights = []
    return tf_class(**args), after, weights


def _triples(spec):
    """A Functional config's input_layers/output_layers: one [name, node, index] or a list of them."""
    if isinstance(spec, (list, tuple)) and len(spec) == 3 and isinstance(spec[0], str):
        return [list(spec)]
    return [list(item) for item in spec]


def _refuse_unsupported(functional):
    bad = []
    for layer in functional.layers:
        name = type(layer).__name__
        if name in SUPPORTED:
            continue
        nested = " (a nested model: build one flat functional model)" if hasattr(layer, "layers") else ""
        bad.append(f"{layer.name!r} ({name}){nested}")
    if bad:
        raise ValueError(f"Keras 3 model {functional.name!r}: unsupported layer{'s' * (len(bad) > 1)} "
                         f"{', '.join(bad)}; supported: {', '.join(SUPPORTED)}")


def _rebuild(functional, config):
    """The tf_keras twin of a Keras 3 functional model and its config (layers called in dependency
    order, each shared layer made once)."""
    _refuse_unsupported(functional)
    by_name = {layer.name: layer for layer in functional.layers}
    produced = {}  # (layer name, node index) -> output tensors of that call
    made = {}  # layer name -> (tf_keras layer, activation layer, weights)
    pending = []
    for entry in config["layers"]:
        name = entry["name"]
        if entry["class_name"] == "InputLayer":
            c = entry["config"]
            produced[(name, 0)] = [tf_keras.Input(batch_shape=c["batch_shape"], name=name)]
            continue
        made[name] = _layer(by_name[name], entry["config"])
        pending += [(name, index, node) for index, node in enumerate(entry["inbound_nodes"])]

    def resolve(value):
        if isinstance(value, dict) and value.get("class_name") == "__keras_tensor__":
            name, node, index = value["config"]["keras_history"]
            return produced[(name, node)][index]  # KeyError: not produced yet
        if isinstance(value, (list, tuple)):
            return [resolve(item) for item in value]
        return value

    while pending:
        waiting = []
        for name, index, node in pending:
            # Keras 3 files `mask=None` and Dropout's default `training=False` with the calls; the
            # training mode comes from the model's call here
            given = sorted(key for key, value in node.get("kwargs", {}).items()
                           if value is not None and key != "training")
            if given:
                raise ValueError(f"layer {name!r} is called with {given}; only tensor arguments are supported")
            try:
                args = resolve(node["args"])
            except KeyError:
                waiting.append((name, index, node))
                continue
            layer, after, _ = made[name]
            output = layer(*args)
            produced[(name, index)] = [after(output) if after else output]
        if len(waiting) == len(pending):
            raise ValueError(f"Keras 3 model {functional.name!r}: cannot order the calls of "
                             f"{sorted({name for name, _, _ in waiting})}")
        pending = waiting

    def ends(spec):
        tensors = [produced[(name, node)][index] for name, node, index in _triples(spec)]
        return tensors[0] if len(tensors) == 1 else tensors

    model = tf_keras.Model(ends(config["input_layers"]), ends(config["output_layers"]), name=functional.name)
    for name, (layer, _, weights) in made.items():
        layer.set_weights(weights)
    return model


def is_keras3_file(path) -> bool:
    """Whether `path` is a `.keras` file saved by Keras 3: a zip whose metadata.json has a
    `keras_version` of 3.x (tf_keras writes its own 2.x version there)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        try:
            metadata = json.loads(archive.read("metadata.json"))
        except (KeyError, ValueError):
            return False
    return str(metadata.get("keras_version", "")).startswith("3")


def _keras3():
    import keras

    if not keras.__version__.startswith("3"):
        raise ImportError(f"reading a Keras 3 model needs Keras 3 as `keras`; found keras {keras.__version__}")
    return keras


def load_file(path, argument: str = "path"):
    """The Keras 3 model in a `.keras` file saved by Keras 3 (errors name the `argument`)."""
    keras = _keras3()
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ValueError(f"`{argument}={path}`: no such file")
    if not is_keras3_file(path):
        raise ValueError(f"`{argument}={path}` is not a .keras file saved by Keras 3 (a tf_keras file "
                         "loads with kerasnets.pipelines.saving.load_keras)")
    try:
        return keras.saving.load_model(path, compile=False)
    except (OSError, ValueError, TypeError, KeyError) as error:
        raise ValueError(f"`{argument}={path}`: Keras 3 cannot load it "
                         f"({type(error).__name__}: {str(error)[:600]})") from None


def from_keras3(model_or_path) -> tf_keras.Model:
    """A tf_keras functional model with the graph, layer names and weights of a Keras 3 functional
    or Sequential model (the object or its `.keras` file) made of the layers in `SUPPORTED`."""
    keras = _keras3()
    if isinstance(model_or_path, (str, os.PathLike)):
        model = load_file(model_or_path, "model_or_path")
    elif isinstance(model_or_path, keras.Model):
        model = model_or_path
    elif isinstance(model_or_path, tf_keras.Model):
        raise TypeError(f"`model_or_path` is a tf_keras model already ({model_or_path.name!r}): use it as it is")
    else:
        raise TypeError(f"`model_or_path` must be a Keras 3 Model or a .keras file path, "
                        f"got {type(model_or_path).__name__}")
    if isinstance(model, keras.Sequential):
        try:
            model = keras.Model(model.inputs, model.outputs, name=model.name)
        except (AttributeError, ValueError):
            raise ValueError(f"Keras 3 Sequential model {model.name!r} has no input yet: start it with "
                             "keras.Input(shape) or build it") from None
    try:
        config = model.get_config()
    except NotImplementedError:
        config = {}
    if "input_layers" not in (config or {}):
        raise TypeError(f"Keras 3 model {model.name!r} ({type(model).__name__}) is not functional or "
                        "Sequential: a subclassed model has no graph to read; build it functionally")
    return _rebuild(model, config)
