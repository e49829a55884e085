"""`kerasnets export`: a model (registry name, .keras file or SavedModel) to .tflite, and with
`micro` to TFLite Micro sources, after the parity gates."""
from __future__ import annotations

import os

import numpy as np

from kerasnets.pipelines import convert, data as data_mod, metadata, tflite_file
from kerasnets.pipelines.files import write_atomic

FP32_TOLERANCE = 1e-4
PARITY_IMAGES = 64


def calibration_images(spec: str, input_shape, count: int = 100) -> np.ndarray:
    dataset = data_mod.load(spec, image_shape=tuple(input_shape))
    return data_mod.representative_images(dataset, count)


def export_model(model, *, name: str, mode: str, out_dir: str, calibration: str = "digits",
                 io_type: str = "int8", micro: bool = False, labels=None, max_arena=None) -> dict:
    """Convert, gate, write DIR/<name>.tflite (+ DIR/micro/ with `micro`); returns a summary."""
    images = calibration_images(calibration, model.input_shape[1:], 100 + PARITY_IMAGES)
    calib, held_out = images[:-PARITY_IMAGES], images[-PARITY_IMAGES:]
    tflite = convert.export(model, mode, calib, io_type=io_type)
    graph = tflite_file.read_tflite(tflite, source=name)
    gate = convert.parity(model, tflite, held_out)
    if mode == "fp32" and gate["max_abs_diff"] > FP32_TOLERANCE:
        raise ValueError(f"fp32 TFLite differs from Keras by {gate['max_abs_diff']:.2e} "
                         f"(> {FP32_TOLERANCE}): not written")
    summary = {"model": name, "mode": mode, "size_bytes": len(tflite), "ops": graph.op_names,
               "parity": gate, "calibration": calibration}
    micro_report = None
    if micro:
        from kerasnets.micro import codegen

        if mode != "int8":
            raise ValueError(f"`micro` needs `mode=int8` (TFLite Micro runs integer models); got `mode={mode}`")
        golden = convert.quantize_input(held_out[:1], convert.litert_interpreter(tflite).get_input_details()[0])
        micro_report = codegen.emit(tflite, os.path.join(out_dir, "micro"), name, labels=labels,
                                    max_arena=max_arena, golden_input=golden)
        summary["micro"] = {k: micro_report[k] for k in ("arena_bytes", "headroom_bytes", "files")}
    if len(graph.outputs[0].shape) == 2:  # a classifier: Task Library / MediaPipe metadata
        classes = graph.outputs[0].shape[-1]
        info = metadata.ImageClassifierInfo(
            name=name, labels=tuple(labels) if labels else tuple(str(i) for i in range(classes)),
            description=f"{name}, {mode} TFLite ({io_type if mode == 'int8' else 'float'} input), "
                        "from kerasnets")
        tflite = metadata.attach(tflite, info)
        summary["metadata"] = {"labels": len(info.labels), "mean": info.mean, "std": info.std}
    path = os.path.join(out_dir, f"{codegen_name(name)}.tflite")
    write_atomic(path, tflite)
    summary["tflite"] = path
    return summary


def codegen_name(name: str) -> str:
    from kerasnets.micro.codegen import c_identifier

    return c_identifier(name)
