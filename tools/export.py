"""`kerasnets export`: a model (registry name, .keras file or SavedModel) to .tflite, and with
`micro` to TFLite Micro sources, after the parity gates."""
from __future__ import annotations

import dataclasses
import os

import numpy as np

from kerasnets.pipelines import convert, data as data_mod, metadata, tflite_file, xnnpack
from kerasnets.pipelines.files import write_atomic

FP32_TOLERANCE = 1e-4
MIN_AGREEMENT = 0.9
PARITY_IMAGES = 64
GOLDEN_CANDIDATES = 16  # held-out images the golden pairs of the TFLite Micro sources are picked from


def calibration_images(spec: str, input_shape, count: int = 100) -> np.ndarray:
    dataset = data_mod.load(spec, image_shape=tuple(input_shape))
    return data_mod.representative_images(dataset, count)


def shipped_tflite(model, mode: str, calibration, *, io_type: str = "int8") -> bytes:
    """The .tflite `kerasnets export` and `kerasnets run` write for `mode`: int8 as converted, the
    graph TFLite Micro and Vela take; any other mode (CPUs and GPUs) lowered for XNNPACK."""
    tflite = convert.export(model, mode, calibration, io_type=io_type)
    return tflite if mode == "int8" else xnnpack.lower_for_xnnpack(tflite)


def export_model(model, *, name: str, mode: str, out_dir: str, calibration: str = "digits",
                 io_type: str = "int8", micro: bool = False, labels=None, max_arena=None,
                 min_agreement: float = MIN_AGREEMENT, tensor_checksums: bool = False,
                 app_io_type: str | None = "uint8", app_int8_dot_product: bool = True) -> dict:
    """Convert, gate, write DIR/<name>.tflite (+ DIR/micro/ with `micro`); returns a summary.

    An int8 classifier also gets DIR/<name>_app.tflite, the copy phone and board apps take (RGB,
    `app_io_type` uint8 or float input/output: see kerasnets.pipelines.app_model); None writes none.
    `app_int8_dot_product`: whether the app's CPU has int8 dot products (xnnpack.lower_for_xnnpack).
    That copy and any other mode's model are lowered for XNNPACK (kerasnets.pipelines.xnnpack);
    the int8 <name>.tflite stays the plain graph TFLite Micro and Vela take.

    Gates, checked before anything is written: an fp32 model within FP32_TOLERANCE of Keras; any
    other mode agreeing with Keras on the top-1 class of at least `min_agreement` of the held-out
    `calibration` images. With `micro`, the golden pairs come from those held-out images and
    `tensor_checksums` adds the per-tensor checksums (see kerasnets.micro.codegen.emit).
    """
    from kerasnets.pipelines import app_model

    if app_io_type is not None and app_io_type not in app_model.IO_TYPES:
        raise ValueError(f"`app_io_type` must be one of {app_model.IO_TYPES} or None; got {app_io_type!r}")
    if not 0 <= min_agreement <= 1:
        raise ValueError(f"`min_agreement` must be between 0 and 1; got {min_agreement}")
    if micro and mode != "int8":
        raise ValueError(f"`micro` needs `mode=int8` (TFLite Micro runs integer models); got `mode={mode}`")
    images = calibration_images(calibration, model.input_shape[1:], 100 + PARITY_IMAGES)
    calib, held_out = images[:-PARITY_IMAGES], images[-PARITY_IMAGES:]
    tflite = shipped_tflite(model, mode, calib, io_type=io_type)
    graph = tflite_file.read_tflite(tflite, source=name)
    gate = convert.parity(model, tflite, held_out)
    if mode == "fp32" and gate["max_abs_diff"] > FP32_TOLERANCE:
        raise ValueError(f"fp32 TFLite differs from Keras by {gate['max_abs_diff']:.2e} "
                         f"(> {FP32_TOLERANCE}): not written")
    if mode != "fp32" and gate["top1_agreement"] < min_agreement:
        raise ValueError(
            f"{mode} TFLite agrees with Keras on the top-1 class of {gate['top1_agreement']:.1%} of "
            f"{gate['images']} held-out `calibration` images, below `min_agreement={min_agreement}`: nothing "
            "was written. Calibrate with real data of the model's domain (`calibration`), export a trained "
            "model (an untrained net's near-equal logits swap places when quantised), or lower `min_agreement`.")
    summary = {"model": name, "mode": mode, "size_bytes": len(tflite), "ops": graph.op_names,
               "parity": gate, "calibration": calibration}
    shipped, app = tflite, None
    if len(graph.outputs[0].shape) == 2:  # a classifier: Task Library / MediaPipe metadata
        classes = graph.outputs[0].shape[-1]
        info = metadata.ImageClassifierInfo(
            name=name, labels=tuple(labels) if labels else tuple(str(i) for i in range(classes)),
            description=f"{name}, {mode} TFLite ({io_type if mode == 'int8' else 'float'} input), "
                        "from kerasnets")
        shipped = metadata.attach(tflite, info)
        summary["metadata"] = {"labels": len(info.labels), "mean": info.mean, "std": info.std}
        if mode == "int8" and app_io_type and model.input_shape[-1] not in (1, 3):
            summary["app_tflite"] = None  # the apps take RGB: only a 1- or 3-channel model maps to it
            summary["app_skipped"] = f"the model takes {model.input_shape[-1]} channels; apps take RGB"
        elif mode == "int8" and app_io_type:  # converted now, written with the rest once every gate passed
            app_info = dataclasses.replace(info, description=f"{name}, int8 TFLite ({app_io_type} input, RGB) "
                                                             "for image-classifier apps, from kerasnets")
            app = app_model.app_tflite(model, calib, app_info, app_io_type,
                                       int8_dot_product=app_int8_dot_product)
    if micro:  # the microcontroller's copy carries no metadata
        from kerasnets.micro import codegen

        golden = convert.quantize_input(held_out[:GOLDEN_CANDIDATES],
                                        convert.litert_interpreter(tflite).get_input_details()[0])
        micro_report = codegen.emit(tflite, os.path.join(out_dir, "micro"), name, labels=labels,
                                    max_arena=max_arena, golden_inputs=golden, tensor_checksums=tensor_checksums)
        summary["micro"] = {k: micro_report[k] for k in ("arena_bytes", "headroom_bytes", "files")}
    path = os.path.join(out_dir, f"{codegen_name(name)}.tflite")
    write_atomic(path, shipped)
    summary["tflite"] = path
    if app is not None:
        app_path = os.path.join(out_dir, f"{codegen_name(name)}_app.tflite")
        write_atomic(app_path, app)
        summary["app_tflite"], summary["app_io_type"] = app_path, app_io_type
        summary["app_int8_dot_product"] = app_int8_dot_product  # the CPU its XNNPACK lowering is for
    return summary


def codegen_name(name: str) -> str:
    from kerasnets.micro.codegen import c_identifier

    return c_identifier(name)
