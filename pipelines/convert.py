"""TFLite conversion: full-integer int8 (builtin int8 ops only) at a static batch of 1."""
from __future__ import annotations

from typing import Iterable

import numpy as np
import tensorflow as tf
import tf_keras as keras


def _batch1_function(model: keras.Model):
    """Concrete function with a static batch of 1: Reshape layers then need no SHAPE/PACK ops."""
    spec = tf.TensorSpec([1, *model.input_shape[1:]], tf.float32, name="input")
    return tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)


def to_int8(model: keras.Model, calibration: Iterable[np.ndarray] | np.ndarray) -> bytes:
    """Full-integer int8 .tflite bytes (int8 input and output) calibrated on `calibration` images
    (an array N,H,W,C or an iterable of such arrays); TFLITE_BUILTINS_INT8 only, no Flex ops."""
    images = np.concatenate([np.asarray(b, np.float32).reshape(-1, *model.input_shape[1:])
                             for b in ([calibration] if isinstance(calibration, np.ndarray) else calibration)])
    if len(images) == 0:
        raise ValueError("to_int8 needs at least one calibration image")

    def representative():
        for image in images:
            yield [image[None]]

    converter = tf.lite.TFLiteConverter.from_concrete_functions([_batch1_function(model)], model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    return converter.convert()


def quantize_input(images: np.ndarray, details: dict) -> np.ndarray:
    """Float images -> the int8 values a model with these input details expects."""
    scale, zero_point = details["quantization"]
    return np.clip(np.round(images / scale + zero_point), -128, 127).astype(np.int8)


def litert_interpreter(tflite: bytes, *, reference: bool = False, threads: int = 1):
    """LiteRT interpreter; `reference=True` selects the reference kernels, which TFLite Micro
    matches bit for bit (the optimised and XNNPACK kernels may round 1-2 LSB differently)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = OpResolverType.BUILTIN_REF if reference else OpResolverType.AUTO
    interpreter = Interpreter(model_content=bytes(tflite), experimental_op_resolver_type=resolver,
                              num_threads=threads)
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


def graph_summary(tflite: bytes) -> dict:
    """Op names (execution order, unique) and the largest tensor rank of a .tflite model."""
    interpreter = litert_interpreter(tflite, reference=True)  # no delegate rewrites the graph
    ops = []
    for op in interpreter._get_ops_details():  # the public API has no op list
        if op["op_name"] not in ops:
            ops.append(op["op_name"])
    ranks = {t["name"]: len(t["shape"]) for t in interpreter.get_tensor_details()}
    return {"ops": ops, "max_rank": max(ranks.values()), "ranks": ranks}
