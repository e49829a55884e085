"""Ethos-U through Arm's Vela compiler: op placement, SRAM/flash and cycles of real int8 models; the
lint's warning for ops the NPU leaves to the CPU; the condensed EffCNet without a GATHER."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tf_keras as keras

import kerasnets
from kerasnets import condensenet as cn
from kerasnets.layers import ChannelGather
from kerasnets.micro import lint
from kerasnets.pipelines import convert, tflite_file
from kerasnets.tools import ethos_u
from conftest import calibrate_batchnorm

pytest.importorskip("ethosu.vela", reason="needs Arm's Vela (pip install 'kerasnets[npu]')")


def _int8(model, images):
    calibrate_batchnorm(model, images)
    return convert.export(model, "int8", images)


def test_vela_maps_resnet8_entirely_to_the_npu(digit_batches):
    model = kerasnets.create_model("resnet8")
    tflite = _int8(model, digit_batches(model.input_shape[1:], 16))
    rows = {target: ethos_u.ethos_u_row(("resnet8", tflite), target=target) for target in ethos_u.TARGETS}
    for target, row in rows.items():
        assert row["cpu_ops"] == [] and row["npu_subgraphs"] == 1, row
        assert row["npu_ops"] == len(tflite_file.read_tflite(tflite).ops)
        # Vela counts the MACs the profiler counts, and cannot beat its MAC array's peak
        # (ethos-u55-128: 128 MACs per cycle)
        assert row["macs"] == pytest.approx(kerasnets.model_info("resnet8").macs, rel=0.01), row
        assert row["cycles"] >= row["macs"] / int(target.rsplit("-", 1)[1]) and row["sram_bytes"] > 0, row
        assert row["est_ms"] == pytest.approx(row["cycles"] / (row["clock_mhz"] * 1e3), rel=1e-3)
    assert rows["ethos-u55-128"]["flash_bytes"] > 0  # weights stream from off-chip flash
    assert rows["ethos-u65-256"]["cycles"] < rows["ethos-u55-128"]["cycles"]  # 256 MACs/cycle vs 128
    assert not [f for f in lint.lint(tflite_file.read_tflite(tflite)) if "Ethos-U" in f.problem]


def test_a_gather_stays_on_the_cpu_and_the_lint_warns(digit_batches):
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv")(inputs)
    x = ChannelGather([5, 1, 1, 0, 7, 2], name="pick")(x)
    x = keras.layers.Conv2D(4, 1, name="head")(x)
    tflite = _int8(keras.Model(inputs, x), digit_batches((8, 8, 3), 8))
    row = ethos_u.ethos_u_row(("picked", tflite))
    assert row["cpu_ops"] == ["GATHER (pick)"] and row["npu_ops"] == 2 and row["npu_subgraphs"] == 2, row
    warnings = [f for f in lint.lint(tflite_file.read_tflite(tflite)) if "Ethos-U" in f.problem]
    assert [(f.severity, f.op, f.layer) for f in warnings] == [("warning", "GATHER", "pick")]
    assert "GATHER" not in lint.ETHOS_U_OPS_VELA_5_2 and lint.ethos_u_ops() >= {"CONV_2D", "TRANSPOSE"}


def test_condensed_effcnet_has_no_gather_and_runs_entirely_on_the_npu(digit_batches):
    model = kerasnets.create_model("effcnet_cifar", condensing=True, classifier_activation="linear")
    cn.finish_condensation(model)  # learned indices: groups keep scattered, shared channels
    images = digit_batches(model.input_shape[1:], 16)
    calibrate_batchnorm(model, images)
    condensed = cn.condense(model)
    tflite = convert.export(condensed, "int8", images)
    ops = convert.graph_summary(tflite)["ops"]
    assert "GATHER" not in ops and "TRANSPOSE" not in ops, ops
    row = ethos_u.ethos_u_row(("effcnet_cifar", tflite), target="ethos-u55-128")
    assert row["cpu_ops"] == [] and row["npu_subgraphs"] == 1 and row["cycles"] > 0, row
    # int8 still follows the float model it came from
    x8 = convert.quantize_input(images, convert.litert_interpreter(tflite).get_input_details()[0])
    agree = np.mean(convert.run_litert(tflite, x8).argmax(-1) == model(images, training=False).numpy().argmax(-1))
    assert agree >= 0.75, agree


def test_cli_bench_ethos_u_prints_one_json_line():
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "-m", "kerasnets.tools.cli", "bench", "--target", "ethos-u55-128",
                           "--model", "resnet8"], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    row = json.loads(done.stdout.strip().splitlines()[-1])
    assert row["model"] == "resnet8" and row["accelerator"] == "Ethos_U55_128" and row["cpu_ops"] == []
    assert row["cycles"] > 0 and row["est_ms"] > 0 and row["vela"]
