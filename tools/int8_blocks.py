"""Where int8 gains over fp32 on this CPU, block by block: LiteRT + XNNPACK latency of a model's
prefixes, so a model that is barely faster in int8 shows which of its blocks hold it back.

A prefix is the model cut after a block (a layer whose output is the only tensor that crosses the
cut), converted to fp32 and to int8 and lowered for XNNPACK as the app model is
(`pipelines.xnnpack.lower_for_xnnpack`). A block's time is the difference between the prefix that
ends after it and the one before; the last prefix is the whole model. All prefixes are timed in
turns (each in a fresh process, median of `runs` invokes; then again, `rounds` times) so load that
comes and goes hits every figure alike. Each int8 prefix ends in a DEQUANTIZE of its cut tensor,
so a block's int8 figure also carries the difference of two such conversions (one pass over a
tensor, small next to the block), and a block under ~10 us is within the timing noise.
"""
from __future__ import annotations

import statistics

from kerasnets.tools import bench

COLUMNS = ["model", "input", "segment", "ends_at", "output_shape", "macs", "fp32_ms", "int8_ms", "speedup",
           "int8_share", "model_fp32_ms", "model_int8_ms", "rounds", "conditions", "machine", "command"]


def _block_key(name: str) -> str:
    """The block a layer belongs to by the zoo's naming: its name up to the first numbered part
    (`block3_ghost1_primary_conv` -> `block3`, `stage2_unit1_dw` -> `stage2`, `stem_bn` -> `stem`)."""
    parts = name.split("_")
    for i, part in enumerate(parts):
        if any(ch.isdigit() for ch in part):
            return "_".join(parts[:i + 1])
    return parts[0]


def _inbound_names(layer) -> list[str]:
    inputs = layer.input if isinstance(layer.input, (list, tuple)) else [layer.input]
    return [t._keras_history.layer.name for t in inputs]


def clean_cuts(model) -> list[str]:
    """Layers (in execution order) after which no earlier tensor is read again: cutting there
    leaves a prefix that computes everything before it."""
    if any(len(layer.inbound_nodes) > 1 for layer in model.layers[1:]):
        raise ValueError(f"clean_cuts: {model.name} calls a layer more than once; time it whole")
    last_read = {}
    for i, layer in enumerate(model.layers[1:], start=1):
        for name in _inbound_names(layer):
            last_read[name] = max(last_read.get(name, 0), i)
    # reach: the furthest position that reads a tensor made before the current layer
    cuts, reach = [], last_read.get(model.layers[0].name, 0)
    for i, layer in enumerate(model.layers[1:], start=1):
        if reach <= i:
            cuts.append(layer.name)
        reach = max(reach, last_read.get(layer.name, i))
    return cuts


def block_cuts(model) -> list[str]:
    """One clean cut per block: the last clean cut of each run of layers sharing a block key
    (`_block_key`); the model's output layer always ends the list."""
    cuts = clean_cuts(model)
    kept = [cut for cut, after in zip(cuts, cuts[1:]) if _block_key(cut) != _block_key(after)]
    return kept + [model.layers[-1].name]


def _prefix_models(model, cuts, calibration) -> dict[str, dict[str, bytes]]:
    import tf_keras as keras

    from kerasnets.pipelines import convert, machine, xnnpack

    dot = machine.has_int8_dot_product()  # timed on this CPU: lowered for it
    prefixes = {}
    for cut in cuts:
        prefix = keras.Model(model.input, model.get_layer(cut).output, name=f"{model.name}_to_{cut}")
        prefixes[cut] = {"fp32": xnnpack.lower_for_xnnpack(convert.export(prefix, "fp32"), int8_dot_product=dot),
                         "int8": xnnpack.lower_for_xnnpack(convert.export(prefix, "int8", calibration),
                                                           int8_dot_product=dot)}
    return prefixes


def _segment_macs(model, cuts) -> list[int]:
    from kerasnets.profile import profile

    macs, segment = [0] * len(cuts), 0
    for row in profile(model)["layers"]:
        macs[segment] += row["macs"]
        if row["name"] == cuts[segment]:
            segment += 1
    return macs


def int8_gain_by_block(model, calibration, *, name: str | None = None, rounds: int = 3, runs: int = 40,
                       command: str = "") -> list[dict]:
    """Rows (one per block, COLUMNS) of `model`'s fp32 and int8 latency on this machine, LiteRT +
    XNNPACK, 1 thread; `calibration`: images the int8 conversion takes its ranges from; `name`: the
    rows' model column (default `model.name`)."""
    if rounds < 1 or runs < 1:
        raise ValueError(f"int8_gain_by_block: rounds and runs must be >= 1, got rounds={rounds}, runs={runs}")
    cuts = block_cuts(model)
    prefixes = _prefix_models(model, cuts, calibration)
    times = {cut: {"fp32": [], "int8": []} for cut in cuts}
    with bench.LoadMonitor() as load:
        for _ in range(rounds):
            for cut in cuts:
                for kind, tflite in prefixes[cut].items():
                    times[cut][kind].append(bench.measure_in_child(tflite, threads=1, runs=runs, xnnpack=True)["median"])
    cumulative = [{kind: statistics.median(values) for kind, values in times[cut].items()} for cut in cuts]
    whole = cumulative[-1]
    rows, before = [], {"fp32": 0.0, "int8": 0.0}
    for i, (cut, ms, macs) in enumerate(zip(cuts, cumulative, _segment_macs(model, cuts))):
        fp32, int8 = ms["fp32"] - before["fp32"], ms["int8"] - before["int8"]
        before = ms
        rows.append({
            "model": name or model.name, "input": "x".join(str(d) for d in model.input_shape[1:]), "segment": i + 1,
            "ends_at": cut, "output_shape": "x".join(str(d) for d in model.get_layer(cut).output.shape[1:]),
            "macs": macs, "fp32_ms": round(fp32, 4), "int8_ms": round(int8, 4),
            "speedup": round(fp32 / int8, 2) if int8 > 0 else "",
            "int8_share": round(int8 / whole["int8"], 3), "model_fp32_ms": round(whole["fp32"], 4),
            "model_int8_ms": round(whole["int8"], 4), "rounds": rounds, "conditions": load.conditions(),
            "machine": bench.machine_name(), "command": command,
        })
    return rows
