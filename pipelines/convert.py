"""TFLite conversion: full-integer int8 (builtin int8 ops only) at a static batch of 1."""
from __future__ import annotations

import contextlib
import re
from typing import Iterable

import numpy as np
import tensorflow as tf
import tf_keras as keras

from kerasnets.pipelines import requantize


def batch1_converter(model: keras.Model) -> tf.lite.TFLiteConverter:
    """TFLite converter for `model` traced at a static batch of 1 (options left at their defaults).

    The static batch lets Reshape layers convert without SHAPE/PACK ops. The variables are
    handed to the converter in a bare tf.Module, not as the Keras model: given the model, the
    converter saves it whole and traces every layer's call (4x slower, same .tflite bytes).
    """
    spec = tf.TensorSpec([1, *model.input_shape[1:]], tf.float32, name="input")
    function = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)
    holder = tf.Module()
    holder.variables_of_the_model = list(model.variables)
    return tf.lite.TFLiteConverter.from_concrete_functions([function], holder)


MODES = ("fp32", "fp16", "dynamic", "int8", "int16x8")
_IO_TYPES = {"int8": tf.int8, "uint8": tf.uint8, "float": tf.float32}
IO_TYPES = tuple(_IO_TYPES)  # input/output types of a full-integer model (float: quantised inside)


def _as_images(calibration, input_shape) -> np.ndarray:
    batches = [calibration] if isinstance(calibration, np.ndarray) else list(calibration)
    images = np.concatenate([np.asarray(b, np.float32).reshape(-1, *input_shape) for b in batches])
    if len(images) == 0:
        raise ValueError("calibration needs at least one image")
    return images


def is_qat(model) -> bool:
    """Whether `model` is a TFMOT quantisation-aware model (fake-quant wrappers)."""
    return any(type(layer).__name__ == "QuantizeWrapperV2" or type(layer).__name__ == "QuantizeLayer"
               for layer in model.layers)


DEAD_VARIANCE = 1e-4  # times a BatchNorm's epsilon: a channel this still carries no signal


@contextlib.contextmanager
def _dead_channels_folded_at_ordinary_scale(model: keras.Model):
    """While converting, give each BatchNorm channel that saw no variance the layer's median variance.

    The converter folds a BatchNorm into the convolution before it with the multiplier
    gamma / sqrt(variance + epsilon). A channel whose input died (a ReLU that never fires) has
    variance ~0, so its folded weights are the conv's weights times gamma / sqrt(epsilon) (a QAT
    model's per-tensor kernel range times that, per channel): in a trained ShuffleNet v1 that made
    one channel's int8 weight scale ~7,500x the median, so coarse that XNNPACK refuses the
    convolution ("failed to prepare": input scale x weight scale / output scale >= 256). The
    channel's output stays its constant beta whatever the multiplier, so the converted model still
    computes the Keras model's function; the variances are restored afterwards, so `model` is
    left as it was.
    """
    saved = []
    for layer in model.layers:
        norm = getattr(layer, "layer", layer)  # a QAT wrapper holds the BatchNorm inside
        if not isinstance(norm, keras.layers.BatchNormalization):
            continue
        variance = norm.moving_variance  # the same variable inside a QAT wrapper
        values = variance.numpy()
        dead = values < DEAD_VARIANCE * norm.epsilon
        if dead.any() and not dead.all():
            saved.append((variance, values))
            variance.assign(np.where(dead, np.median(values[~dead]), values))
    try:
        yield
    finally:
        for variance, values in saved:
            variance.assign(values)


def _zero_points_settled(model: keras.Model):
    """`quantize.zero_points_settled` for a QAT model, nothing for a float one."""
    if not is_qat(model):
        return contextlib.nullcontext()
    from kerasnets.pipelines import quantize  # TFMOT, loaded only for a QAT model
    return quantize.zero_points_settled(model)


def export(model: keras.Model, mode: str = "int8", calibration=None, *, io_type: str = "int8") -> bytes:
    """Convert a tf_keras model (float or QAT) to .tflite bytes at a static batch of 1.

    mode: fp32 | fp16 (float16 weights) | dynamic (int8 weights, float activations) |
    int8 (full integer; `io_type` int8, uint8 or float input/output) | int16x8 (int16 activations,
    int8 weights). int8 and int16x8 calibrate on `calibration` images unless the model is a
    QAT model, whose fake-quant ranges already fix the scales. An int8 model's requantisations
    that TFLite's kernels would round through a coarse grid are written as depthwise convolutions
    that round them as the QAT model does (`pipelines/requantize.py`).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if io_type not in _IO_TYPES:
        raise ValueError(f"`io_type` must be one of {IO_TYPES}, got {io_type!r}")
    converter = batch1_converter(model)
    if mode != "fp32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "fp16":
        converter.target_spec.supported_types = [tf.float16]
    if mode in ("int8", "int16x8"):
        if calibration is None and not is_qat(model):
            raise ValueError(f"mode {mode} needs calibration images (a representative dataset)")
        if calibration is None:
            # TF 2.21's converter insists on a representative dataset even for a QAT model,
            # though it keeps the scales the fake-quant ops learned: any images of the right shape do.
            calibration = np.random.default_rng(0).uniform(0, 1, (4, *model.input_shape[1:])).astype("float32")
        images = _as_images(calibration, model.input_shape[1:])
        converter.representative_dataset = lambda: ([image[None]] for image in images)
        if mode == "int8":
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = converter.inference_output_type = _IO_TYPES[io_type]
        else:
            converter.target_spec.supported_ops = [
                tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
    if mode == "fp32":  # float weights: a large folded multiplier costs nothing
        return converter.convert()
    with _dead_channels_folded_at_ordinary_scale(model), _zero_points_settled(model):
        converted = converter.convert()
    return requantize.requantise_exactly(converted) if mode == "int8" else converted


def calibrate_batchnorm(model: keras.Model, images: np.ndarray) -> None:
    """Set every BatchNorm's moving statistics to those of one forward pass over `images`.

    For untrained nets only (zoo tables, tests, architecture searches): random-init statistics
    let activations shrink or grow layer after layer, so int8 scales collapse and the logits of
    a deep net can span ~1e-9 — which TFLite Micro's softmax refuses by aborting.
    """
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    saved = [layer.momentum for layer in norms]
    for layer in norms:
        layer.momentum = 0.0
    model(images, training=True)
    for layer, momentum in zip(norms, saved):
        layer.momentum = momentum


def to_int8(model: keras.Model, calibration: Iterable[np.ndarray] | np.ndarray) -> bytes:
    """Full-integer int8 .tflite bytes (int8 input and output) calibrated on `calibration` images
    (an array N,H,W,C or an iterable of such arrays); TFLITE_BUILTINS_INT8 only, no Flex ops."""
    return export(model, "int8", calibration)


def quantize_input(images: np.ndarray, details: dict) -> np.ndarray:
    """Float images -> the values a model with these LiteRT input details expects (as is for a
    float input; quantised and clipped to the integer type's range otherwise)."""
    dtype = np.dtype(details["dtype"])
    if dtype.kind == "f":
        return images.astype(dtype)
    scale, zero_point = details["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.round(images / scale + zero_point), info.min, info.max).astype(dtype)


def dequantize_output(values: np.ndarray, details: dict) -> np.ndarray:
    scale, zero_point = details["quantization"]
    if np.dtype(details["dtype"]).kind == "f" or scale == 0:
        return values.astype(np.float32)
    return (values.astype(np.float32) - zero_point) * scale


def predict_litert(tflite: bytes, images: np.ndarray, *, reference: bool = False) -> np.ndarray:
    """Float outputs of LiteRT for float `images`, whatever the model's input and output types
    (quantised in, dequantised out)."""
    interpreter = litert_interpreter(tflite, reference=reference)
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    return dequantize_output(run_litert(tflite, quantize_input(images, inp), reference=reference), out)


def parity(model: keras.Model, tflite: bytes, images: np.ndarray) -> dict:
    """Compare a .tflite with its Keras model on real images: max |diff| of the (dequantised)
    outputs and top-1 agreement. The export gates: fp32 max diff <= 1e-4; int8 agreement reported."""
    expected = model.predict(images, verbose=0, batch_size=32)
    got = predict_litert(tflite, images)
    return {"max_abs_diff": float(np.abs(got - expected).max()),
            "top1_agreement": float(np.mean(got.argmax(-1) == expected.argmax(-1))),
            "images": int(len(images))}


def litert_interpreter(tflite: bytes, *, reference: bool = False, threads: int = 1, keep_tensors: bool = False):
    """LiteRT interpreter; `reference=True` selects the reference kernels, which TFLite Micro
    matches bit for bit (the optimised and XNNPACK kernels may round 1-2 LSB differently);
    `keep_tensors=True` keeps every intermediate tensor readable after `invoke`."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = OpResolverType.BUILTIN_REF if reference else OpResolverType.AUTO
    interpreter = Interpreter(model_content=bytes(tflite), experimental_op_resolver_type=resolver,
                              num_threads=threads, experimental_preserve_all_tensors=keep_tensors)
    interpreter.allocate_tensors()
    return interpreter


def run_litert(tflite: bytes, inputs: np.ndarray, *, reference: bool = False) -> np.ndarray:
    """Outputs of LiteRT for each item of `inputs` (already in the model's input dtype)."""
    interpreter = litert_interpreter(tflite, reference=reference)
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    outputs = []
    for item in inputs:
        interpreter.set_tensor(inp["index"], item[None])
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(out["index"])[0].copy())
    return np.stack(outputs)


def tflite_predictions(tflite: bytes, examples) -> tuple[np.ndarray, np.ndarray]:
    """(labels, predicted classes) of a .tflite classifier (LiteRT, any input type) over
    (image, label) pairs."""
    interpreter = litert_interpreter(tflite)
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    labels, predicted = [], []
    for x, y in examples:
        interpreter.set_tensor(inp["index"], quantize_input(np.asarray(x)[None], inp))
        interpreter.invoke()
        predicted.append(int(np.argmax(interpreter.get_tensor(out["index"])[0])))
        labels.append(int(y))
    return np.asarray(labels, np.int64), np.asarray(predicted, np.int64)


def tflite_accuracy(tflite: bytes, examples) -> float:
    """Top-1 accuracy of a .tflite classifier (LiteRT, any input type) over (image, label) pairs."""
    labels, predicted = tflite_predictions(tflite, examples)
    return float(np.mean(labels == predicted)) if len(labels) else 0.0


def tflite_test_predictions(tflite: bytes, data, limit: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """tflite_predictions on up to `limit` test images of a pipelines.data.ImageData."""
    return tflite_predictions(tflite, data.test.take(limit).as_numpy_iterator())


def tflite_top1(tflite: bytes, data, limit: int = 2000) -> float:
    """tflite_accuracy on up to `limit` test images of a pipelines.data.ImageData."""
    return tflite_accuracy(tflite, data.test.take(limit).as_numpy_iterator())


def confusion_matrix(labels, predicted, classes: int) -> list[list[int]]:
    """counts[true][predicted] over `classes` classes."""
    counts = np.zeros((classes, classes), np.int64)
    np.add.at(counts, (np.asarray(labels, np.int64), np.asarray(predicted, np.int64)), 1)
    return counts.tolist()


def graph_summary(tflite: bytes) -> dict:
    """Op names (execution order, unique) and the largest tensor rank of a .tflite model."""
    interpreter = litert_interpreter(tflite, reference=True)  # no delegate rewrites the graph
    ops = []
    for op in interpreter._get_ops_details():  # the public API has no op list
        if op["op_name"] not in ops:
            ops.append(op["op_name"])
    ranks = {t["name"]: len(t["shape"]) for t in interpreter.get_tensor_details()}
    return {"ops": ops, "max_rank": max(ranks.values()), "ranks": ranks}


# A QAT layer's name as the converter leaves it in a tensor name ("model/quant_conv1/Conv2D;...")
_QAT_LAYER_IN_TENSOR_NAME = re.compile(r"(quant_[A-Za-z0-9_]+?)(?:/|;|$)")
OP_STEP_OFF = 0.51  # an output more than half a step from the QAT value rounded the other way
OP_STEPS_FAR = 1.5  # beyond what one rounding explains


def qat_input(qat: keras.Model, images: np.ndarray) -> np.ndarray:
    """`images` as the QAT model's input quantiser gives them, on its int8 grid: the input to give
    the int8 model converted from it. Quantising the float images instead disagrees with it where a
    pixel sits exactly halfway between two steps (pixels normalised as (p - 127.5) / 127.5 all do),
    by float error alone."""
    quantiser = next(layer for layer in qat.layers if type(layer).__name__ == "QuantizeLayer")
    # where the input feeds several layers, QAT's clone calls the quantiser once in a graph it
    # discards as well: take its call on this model's input
    node = next((n for n in quantiser.inbound_nodes if n.input_tensors is qat.input), quantiser.inbound_nodes[-1])
    return keras.Model(qat.input, node.output_tensors).predict(images, verbose=0, batch_size=50)


def _int8_tensor_values(interpreter, int8_inputs: np.ndarray) -> dict[int, np.ndarray]:
    """Dequantised value of every quantised tensor the graph computes (its input and every op's
    output, not the weights), stacked over the input items."""
    details = interpreter.get_tensor_details()
    inp = interpreter.get_input_details()[0]
    wanted = {t for op in interpreter._get_ops_details() for t in op["outputs"] if details[t]["quantization"][0]}
    wanted.add(inp["index"])
    values: dict[int, list] = {}
    for item in int8_inputs:
        interpreter.set_tensor(inp["index"], item[None])
        interpreter.invoke()
        for t in wanted:
            scale, zero_point = details[t]["quantization"]
            values.setdefault(t, []).append((interpreter.get_tensor(t).astype(np.float32) - zero_point) * scale)
    return {t: np.concatenate(v) for t, v in values.items()}


def qat_op_fidelity(qat: keras.Model, tflite: bytes, images: np.ndarray) -> list[dict]:
    """Op by op, how far the int8 model converted from `qat` is from the QAT model: each int8 op
    (LiteRT reference kernels) is given the int8 model's own input tensors, the QAT layers it was
    converted from run on the same (dequantised) values, and the two outputs are compared in int8
    output steps. So an op's figure is its own rounding, not what it inherits from the ops before.

    One dict per op that writes a quantised tensor: `op`, `layer` (the last QAT layer fused into
    it, None where the op could not be matched to QAT layers), `off` (share of outputs more than
    half a step apart, i.e. rounded to another int8 value), `far` (share more than 1.5 steps apart)
    and `max_steps`. A faithful conversion rounds a few outputs per op one step apart (TFLite's
    requantisation rounds twice); a real mismatch (a BatchNorm lost, a quantiser moved) moves
    most outputs by several steps. Ops are matched to layers by the names the converter leaves in
    tensor names: some are not matched, and an int8 op that computes part of one QAT layer (the
    ADD of a hard-sigmoid gate) is compared with the whole layer's output. A requantisation (an
    int8 -> int8 QUANTIZE, or the depthwise convolution `requantize` writes for one) is compared
    with its own input, which the QAT model rounds once to the new scale; its `layer` is the one
    whose output it requantises."""
    ops, values, details, _ = _int8_run("qat_op_fidelity", qat, tflite, images)
    layers = {layer.name: layer for layer in qat.layers}
    rows = []
    for op in ops:
        out = op["outputs"][0]
        feeds = [t for t in op["inputs"] if t in values]
        if _is_requantisation(op, details):
            # the QAT model rounds the same value once, at the quantiser of the layer reading it
            names, expected = _layer_names(details[feeds[0]]["name"]), values[feeds[0]]
        else:
            names = _layer_names(details[out]["name"])
            expected = _qat_piece(layers, names, feeds, details, values)
        row = {"op": op["op_name"], "layer": None, "off": None, "far": None, "max_steps": None}
        if expected is not None and expected.shape == values[out].shape:
            steps = _steps_apart(expected, values[out], details[out]["quantization"])
            row.update(layer=names[0], off=float(np.mean(steps > OP_STEP_OFF)),
                       far=float(np.mean(steps > OP_STEPS_FAR)), max_steps=float(steps.max()))
        rows.append(row)
    return rows


def qat_tensor_drift(qat: keras.Model, tflite: bytes, images: np.ndarray) -> list[dict]:
    """End to end, how far each tensor of the int8 model converted from `qat` is from the QAT
    model's: both run on `images` (the int8 model on LiteRT's reference kernels), and each int8
    op's output is compared with the output of the QAT layer its tensor names (a requantisation:
    the layer whose output it requantises), in int8 output steps. `qat_op_fidelity` gives each op
    the int8 model's own inputs and so measures the op alone; this measures what reaches each op,
    so where the figures jump from one op to the next a difference starts or is amplified. Keep
    `images` few (every QAT layer's output is held for them).

    One dict per op that writes a quantised tensor, in graph order: `op`, `layer` (None where no
    QAT layer of the same shape is named), `off` (share of outputs rounded to another value),
    `median_steps`, `p99_steps` and `max_steps`."""
    ops, values, details, model_output = _int8_run("qat_tensor_drift", qat, tflite, images)
    named = [layer for layer in qat.layers if _QAT_LAYER_IN_TENSOR_NAME.fullmatch(layer.name)]
    outputs = keras.Model(qat.input, [layer.output for layer in named]).predict(images, verbose=0)
    qat_values = dict(zip((layer.name for layer in named), outputs if len(named) > 1 else [outputs]))
    rows = []
    for op in ops:
        out = op["outputs"][0]
        source = op["inputs"][0] if _is_requantisation(op, details) else out
        # the converter names the model's output after the signature: it is the QAT model's output
        names = [qat.layers[-1].name] if out == model_output else _layer_names(details[source]["name"])
        layer = next((name for name in names
                      if name in qat_values and qat_values[name].shape == values[out].shape), None)
        row = {"op": op["op_name"], "layer": layer, "off": None, "median_steps": None, "p99_steps": None,
               "max_steps": None}
        if layer is not None:
            steps = _steps_apart(qat_values[layer], values[out], details[out]["quantization"])
            row.update(off=float(np.mean(steps > OP_STEP_OFF)), median_steps=float(np.median(steps)),
                       p99_steps=float(np.percentile(steps, 99)), max_steps=float(steps.max()))
        rows.append(row)
    return rows


def _int8_run(caller: str, qat: keras.Model, tflite: bytes, images: np.ndarray):
    """(the ops that write a quantised tensor, each such tensor's dequantised values on `images`,
    the tensor details, the output tensor's index) of the int8 model, run on LiteRT's reference
    kernels with the input the QAT model's quantiser gives."""
    if not is_qat(qat):
        raise ValueError(f"{caller} compares a .tflite with the QAT model it was converted from; "
                         f"`qat` ({qat.name}) has no QAT layers: pass the model quantize.quantize_model made")
    interpreter = litert_interpreter(tflite, reference=True, keep_tensors=True)
    int8_input = quantize_input(qat_input(qat, images), interpreter.get_input_details()[0])
    values = _int8_tensor_values(interpreter, int8_input)
    ops = [op for op in interpreter._get_ops_details() if op["outputs"][0] in values]
    return ops, values, interpreter.get_tensor_details(), interpreter.get_output_details()[0]["index"]


def _steps_apart(expected: np.ndarray, values: np.ndarray, quantization) -> np.ndarray:
    """|expected - values| in steps of the int8 tensor `values` came from. A layer without a
    quantiser of its own (a conv feeding a concatenation) is clamped by the next one, whose range
    its int8 output has, so `expected` is clamped to that range first."""
    scale, zero_point = quantization
    expected = np.clip(expected, (-128 - zero_point) * scale, (127 - zero_point) * scale)
    return np.abs(expected - values) / scale


def _is_requantisation(op: dict, details) -> bool:
    """An int8 -> int8 QUANTIZE, or the depthwise convolution `pipelines.requantize` writes for one
    (its weights are named after its input, with `requantize.REQUANTISED_SUFFIX`)."""
    if op["op_name"] == "QUANTIZE":
        return all(details[t]["dtype"] == np.int8 for t in (op["inputs"][0], op["outputs"][0]))
    return op["op_name"] == "DEPTHWISE_CONV_2D" and details[op["inputs"][1]]["name"].endswith(
        requantize.REQUANTISED_SUFFIX)


def _layer_names(tensor_name: str) -> list[str]:
    """QAT layer names in a converted tensor's name; a fused op's name lists its last layer first."""
    return _QAT_LAYER_IN_TENSOR_NAME.findall(tensor_name)


def _qat_piece(layers: dict, names: list[str], feeds: list[int], details, values):
    """Output of the QAT layers an int8 op was converted from, run on the op's own input tensors
    `feeds`; None where they cannot be matched. The op's name may omit its first layers (a grouped
    conv's tensor is named after its BatchNorm and ReLU only), so the piece starts at the layer
    whose inputs come from the layers named in the feeding tensors' names."""
    names = [name for name in names if name in layers]
    if not names:
        return None
    feeding = [set(_layer_names(details[t]["name"])) for t in feeds]
    first = layers[names[-1]]
    for _ in range(4):  # walk back over the unnamed layers
        inputs = first.input if isinstance(first.input, list) else [first.input]
        producers = [tensor._keras_history.layer for tensor in inputs]
        if len(producers) == len(feeding) and all(
                p.name in f or (type(p).__name__ == "QuantizeLayer" and not f) for p, f in zip(producers, feeding)):
            break
        if len(producers) != 1:
            return None
        first = producers[0]
    else:
        return None
    try:
        piece = keras.Model(inputs, layers[names[0]].output)
    except ValueError:  # not one connected piece of the QAT graph
        return None
    arrays = [values[t] for t in feeds]
    return np.asarray(piece(arrays if len(arrays) > 1 else arrays[0], training=False))
