"""The shipped firmware builds and runs: on QEMU's Cortex-M4 (mps2-an386) with TFLM's reference and
CMSIS-NN kernels, and on the host, its int8 outputs for real images are the tflite-micro Python
interpreter's, bit for bit, for one variant of every family of the zoo that fits the board; a
model TFLite Micro would run wrongly (a 5-D transpose) is refused before it reaches the board.

Needs arm-none-eabi-g++, qemu-system-arm, g++ (scripts/bootstrap.sh) and the TFLM tree fixtures
(../shared/tflm/*.tar.gz beside the checkout, or $KERASNETS_TFLM_FIXTURES). The TFLM library is
compiled once per kernel set and target per session (in a session folder, or in
$KERASNETS_CACHE to reuse it across runs).
"""
import functools
import json
import os
import re
import shutil
import time

import numpy as np
import pytest

import kerasnets
from kerasnets.micro import arena, codegen, firmware_build
from kerasnets.pipelines import convert, tflite_file
from conftest import calibrate_batchnorm

FIXTURES = os.environ.get("KERASNETS_TFLM_FIXTURES") or os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "tflm")
TREES = {"reference": os.path.join(FIXTURES, "tflm-cortex-m4-reference.tar.gz"),
         "cmsis_nn": os.path.join(FIXTURES, "tflm-cortex-m4-cmsis-nn.tar.gz")}
MISSING = [tool for tool in ("arm-none-eabi-g++", "qemu-system-arm", "g++") if not shutil.which(tool)]
needs_toolchain = pytest.mark.skipif(
    bool(MISSING) or not all(os.path.isfile(t) for t in TREES.values()),
    reason=(f"{', '.join(MISSING)} not installed (scripts/bootstrap.sh installs them)" if MISSING
            else f"TFLM tree fixtures not found in {FIXTURES} (set KERASNETS_TFLM_FIXTURES)"))

# One xdist worker runs every firmware test (pytest.ini: --dist loadgroup), so each TFLM library is
# compiled once per run, not once per worker.
pytestmark = pytest.mark.xdist_group("firmware")

# QEMU's board with both kernel sets; the host (reference kernels) for the published models only.
BOARD_RUNS = ["reference", "cmsis_nn"]

# The two models as published (their input, 1000 or 10 classes, softmax head): every test runs them.
PUBLISHED = ["resnet8", "shufflenetv2_050_cifar"]
# One variant of every other family of the zoo (a family: the paper its variants implement, as in
# test_zoo; the Ghost-ified ResNet shares GhostNet's paper, not its code, so it has its own row):
# the cheapest, at the smallest input its downsampling allows (side given here) and 10 classes, so
# the QEMU runs stay short. They end in logits: an untrained net's softmax is flat, and SOFTMAX on
# the board is proven by the published two.
FAMILY_MODELS = {
    "augshufflenet_050_cifar": 8, "condensenet50_cifar": 4, "densenet40_k12_cifar": 4,
    "effcnet_cifar": 4, "ghost_resnet56_cifar": 4, "ghostnet_030": 32, "hardnet39ds": 32,
    "mgiad_cifar": 8, "mgic_resnet20_cifar": 4, "mobilenet_v1_100": 32, "mobilenet_v2_100": 32,
    "mobilenet_v3_small_100": 32, "resnet14_062_cifar": 4, "shufflenet_050_g4": 32,
}
# Families with no variant that fits the board, with why (test_families_left_off_the_board_do_not_fit
# checks it): the cheapest variant, whose int8 weights alone (a byte each) exceed the board's flash.
NOT_ON_THE_BOARD = {
    "g_ghost_regnetx_032": "9.6M weights at 32x32 and 10 classes: over the board's 4 MiB flash",
    "threshnet79": "14.4M weights at 32x32 and 10 classes: over the board's 4 MiB flash",
    "triplenet_s": "9.0M weights at 32x32 and 10 classes: over the board's 4 MiB flash",
    "vgg16_cifar": "15.0M weights at 16x16 and 10 classes: over the board's 4 MiB flash",
}


@pytest.fixture(scope="session")
def firmware_cache(tmp_path_factory):
    """One TFLM library per kernel set and target for the whole session. The measurements of each
    run go to firmware-timings.json in pytest's base temporary folder (xdist hides prints)."""
    cache = os.environ.get("KERASNETS_CACHE") or str(tmp_path_factory.mktemp("tflm-cache"))
    state = {"dir": cache, "runs": []}
    yield state
    report = tmp_path_factory.getbasetemp() / "firmware-timings.json"
    report.write_text(json.dumps(state["runs"], indent=1) + "\n")


def _family_arguments(name):
    """create_model arguments of a bundle: as published, or small for a family model."""
    if name not in FAMILY_MODELS:
        return {}
    side = FAMILY_MODELS[name]
    return {"input_shape": (side, side, 3), "classes": 10, "classifier_activation": "linear"}


# the published models first, in the same order wherever `bundle` is parametrised, so pytest
# keeps one bundle per model (it groups module-scoped parameters by their index)
@pytest.fixture(scope="module", params=PUBLISHED + sorted(FAMILY_MODELS))
def bundle(request, tmp_path_factory, digit_batches):
    name = request.param
    model = kerasnets.create_model(name, **_family_arguments(name))
    images = digit_batches(model.input_shape[1:], 16)
    calibrate_batchnorm(model, images)
    tflite = convert.export(model, "int8", images)
    details = convert.litert_interpreter(tflite, reference=True).get_input_details()[0]
    x8 = convert.quantize_input(images, details)
    out = tmp_path_factory.mktemp(f"{name}-bundle")
    report = codegen.emit(tflite, out / "micro", name, golden_inputs=x8, tensor_checksums=name in PUBLISHED)
    # the golden pairs: two real images whose int8 outputs differ, so a firmware that ignored its
    # input would fail; their outputs are the tflite-micro Python interpreter's (reference kernels)
    inputs, expected = report["golden_inputs"], report["golden_outputs"]
    assert np.array_equal(expected, arena.run_micro(tflite, inputs)) and not np.array_equal(*expected)
    peak = kerasnets.profile(model)["peak_activation_bytes"]  # the live int8 activations an arena must hold
    return name, tflite, out / "micro", inputs, expected, peak


def _outputs_are_the_interpreters(bundle, firmware_cache, kernels, target, tmp_path):
    """Build and run the bundle; its outputs for both inputs are the Python interpreter's, bit for bit."""
    name, tflite, model_dir, inputs, expected, peak = bundle
    started = time.monotonic()
    result = firmware_build.benchmark(model_dir, TREES[kernels], target, inputs=inputs, expected=expected,
                                      out_dir=tmp_path / "build", cache_dir=firmware_cache["dir"], jobs=2)
    firmware_cache["runs"].append({
        "model": name, "input_shape": list(inputs.shape[1:]), "tflite_bytes": len(tflite),
        "kernels": kernels, "target": target, "library_seconds": round(result["library_seconds"], 1),
        "firmware_build_seconds": round(result["build_seconds"], 1), "run_seconds": round(result["seconds"], 1),
        "total_seconds": round(time.monotonic() - started, 1), "size": result["size"],
        "arena_used": result["arena_used"], "arena_size": result["arena_size"], "ticks": result["ticks"],
        "instructions": result.get("instructions"), "outputs": result["outputs"].tolist()})
    assert result["kernels"] == kernels
    assert result["exit_code"] == 0 and result["passed"] and not result["errors"], result["log"][-2000:]
    assert result["outputs"].shape == expected.shape
    assert np.array_equal(result["outputs"], expected)  # bit-identical to the Python interpreter
    assert not np.array_equal(result["outputs"][0], result["outputs"][1])
    assert result["max_diff"] == [0, 0] and result["checks"] == [True, True]
    assert not result["tensors"]  # built without KN_TENSOR_CHECKSUMS
    # the arena holds at least the live int8 activations the profiler counts, and fits its buffer
    assert peak <= result["arena_used"] <= result["arena_size"], (peak, result["arena_used"])
    assert len(result["ticks"]) == 2 and all(t > 0 for t in result["ticks"])
    if target == "mps2-an386":
        assert result["size"]["flash"] > len(tflite) and result["size"]["ram"] > result["arena_size"]
        assert all(n == t * 40 for n, t in zip(result["instructions"], result["ticks"]))
        # -icount makes the count deterministic: the same model and kernels give the same count
        # for inputs of the same shape up to data-dependent branches (a few percent at most)
        assert abs(result["instructions"][0] - result["instructions"][1]) < 0.05 * result["instructions"][0]


@needs_toolchain
@pytest.mark.parametrize("kernels", BOARD_RUNS)
def test_firmware_outputs_are_the_tflite_micro_interpreters(bundle, firmware_cache, kernels, tmp_path):
    _outputs_are_the_interpreters(bundle, firmware_cache, kernels, "mps2-an386", tmp_path)


@needs_toolchain
@pytest.mark.parametrize("bundle", PUBLISHED, indirect=True)
def test_host_firmware_outputs_are_the_tflite_micro_interpreters(bundle, firmware_cache, tmp_path):
    _outputs_are_the_interpreters(bundle, firmware_cache, "reference", "host", tmp_path)


def test_every_family_runs_on_the_board_or_is_listed_with_why():
    def papers(names):
        return {kerasnets.model_info(n).paper for n in names}

    on_board = PUBLISHED + list(FAMILY_MODELS)
    assert papers(on_board) | papers(NOT_ON_THE_BOARD) == papers(kerasnets.list_models())
    assert not papers(on_board) & papers(NOT_ON_THE_BOARD)
    for name, side in FAMILY_MODELS.items():  # the smallest input the model allows
        assert side == kerasnets.model_info(name).min_size, name


def _board_flash_bytes():
    """The flash the firmware's linker script gives the board (mps2_an386.ld)."""
    with open(os.path.join(firmware_build.FIRMWARE_DIR, "mps2_an386.ld")) as f:
        return int(re.search(r"FLASH \(rx\)\s*:\s*ORIGIN = \w+, LENGTH = (\d+)M", f.read()).group(1)) << 20


@pytest.mark.parametrize("name", sorted(NOT_ON_THE_BOARD))
def test_families_left_off_the_board_do_not_fit(name):
    info = kerasnets.model_info(name)
    family = [n for n in kerasnets.list_models() if kerasnets.model_info(n).paper == info.paper]
    assert info.params == min(kerasnets.model_info(n).params for n in family)  # its cheapest variant
    side = info.min_size
    model = kerasnets.create_model(name, input_shape=(side, side, 3), classes=10)
    assert model.count_params() > _board_flash_bytes(), NOT_ON_THE_BOARD[name]


@needs_toolchain
@pytest.mark.parametrize("bundle", PUBLISHED, indirect=True)
def test_golden_pairs_and_tensor_checksums_of_the_export_pass_on_the_cortex_m4(bundle, firmware_cache, tmp_path):
    """The firmware as `kerasnets export --micro` ships it (no kerasnets_inputs.h) checks every golden
    pair, and with KN_TENSOR_CHECKSUMS every activation tensor: CMSIS-NN on QEMU gives the
    reference kernels' bytes for each."""
    _, _, model_dir, inputs, expected, _ = bundle
    result = firmware_build.benchmark(model_dir, TREES["cmsis_nn"], "mps2-an386", tensor_checksums=True,
                                      out_dir=tmp_path / "build", cache_dir=firmware_cache["dir"], jobs=2)
    assert result["passed"] and result["exit_code"] == 0, result["log"][-2000:]
    assert np.array_equal(result["outputs"], expected) and result["checks"] == [True, True]
    assert result["tensors"] and all(t["passed"] for t in result["tensors"])
    assert "kn-check 1 max-diff 0 PASS" in result["log"]


def _corrupt(model_dir, tmp_path, *, output_byte=None, tensor=None):
    """A copy of the bundle with golden output 1's byte `output_byte` or tensor checksum `tensor` off by one."""
    copy = tmp_path / "micro"
    shutil.copytree(model_dir, copy)
    golden = next(copy.glob("*_golden.h"))
    text = golden.read_text()
    if output_byte is not None:
        outputs = text.index("kGoldenOutputs[kGoldenCount]")
        second = text.index("{", text.index("}", text.index("{", text.index("{", outputs) + 1)) + 1)
        values = text[second + 1:text.index("}", second)].split(",")
        value = int(values[output_byte])
        values[output_byte] = str(value + 1 if value < 127 else value - 1)
        text = text[:second + 1] + ",".join(values) + text[text.index("}", second):]
    if tensor is not None:
        row = list(re.finditer(r"\{\d+, \d+, 0x([0-9a-f]{8})u\}", text))[tensor]
        text = text[:row.start(1)] + f"{int(row.group(1), 16) ^ 1:08x}" + text[row.end(1):]
    golden.write_text(text)
    return copy


@needs_toolchain
@pytest.mark.parametrize("bundle", ["resnet8"], indirect=True)
def test_host_firmware_passes_each_pair_and_tensor_and_fails_a_corrupted_byte(bundle, firmware_cache, tmp_path):
    """PASS for every golden pair and every activation tensor's checksum; a golden output byte and a
    tensor checksum off by one each give FAIL on their own line, exit status 1."""
    _, tflite, model_dir, _, expected, _ = bundle
    run = functools.partial(firmware_build.benchmark, tflm_tree=TREES["reference"], target="host",
                            tensor_checksums=True, cache_dir=firmware_cache["dir"], jobs=2)
    good = run(model_dir, out_dir=tmp_path / "good")
    activations = [t.index for t in tflite_file.read_tflite(tflite).tensors if not t.is_constant]
    assert good["passed"] and good["exit_code"] == 0 and good["checks"] == [True, True], good["log"][-2000:]
    assert "kn-check 0 max-diff 0 PASS" in good["log"] and "kn-check 1 max-diff 0 PASS" in good["log"]
    assert [t["index"] for t in good["tensors"]] == activations and all(t["passed"] for t in good["tensors"])
    assert good["arena_used"] <= good["arena_size"]
    bad = run(_corrupt(model_dir, tmp_path / "bad", output_byte=3, tensor=2), out_dir=tmp_path / "bad-build")
    assert not bad["passed"] and bad["exit_code"] == 1 and bad["checks"] == [True, False]
    assert "kn-check 1 max-diff 1 FAIL" in bad["log"] and "~~~SOME TESTS FAILED~~~" in bad["log"]
    assert np.array_equal(bad["outputs"], expected)  # the firmware computed the same; the golden byte was wrong
    assert [t["passed"] for t in bad["tensors"]] == [i != 2 for i in range(len(activations))]
    assert re.search(rf"kn-tensor {activations[2]} bytes \d+ crc32 \w+ expected \w+ FAIL", bad["log"])


def _five_d_transpose_tflite():
    """int8 model with a channel shuffle written as the textbook 5-D reshape and transpose."""
    import tf_keras as keras

    layers = keras.layers
    inp = layers.Input((8, 8, 8))
    x = layers.Conv2D(8, 1, name="pw")(inp)
    x = layers.Reshape((8, 8, 2, 4), name="shuffle_split")(x)
    x = layers.Permute((1, 2, 4, 3), name="shuffle_transpose")(x)
    x = layers.Reshape((8, 8, 8), name="shuffle_merge")(x)
    model = keras.Model(inp, layers.Conv2D(4, 1, name="head")(x))
    return convert.to_int8(model, np.random.default_rng(0).normal(size=(8, 8, 8, 8)).astype("float32"))


@pytest.mark.skipif(not all(os.path.isfile(t) for t in TREES.values()), reason="TFLM tree fixtures not found")
def test_a_5d_transpose_is_refused_before_it_reaches_the_board(firmware_cache, tmp_path):
    """CMSIS-NN's int8 TRANSPOSE takes at most 4-D and does not report the failure, so a 5-D one
    would give wrong outputs on the board: `kerasnets bench --target cortex-m4` refuses the model,
    and so does the firmware build given a bundle written past the export's lint; nothing is built."""
    from kerasnets.tools import cortex_m

    tflite = _five_d_transpose_tflite()
    with pytest.raises(codegen.MicroExportError, match=r"TRANSPOSE \(layer shuffle_transpose\): 5-D"):
        cortex_m.cortex_m4_row(("shuffle5d", tflite), tflm_tree=TREES["cmsis_nn"], cache_dir=firmware_cache["dir"])
    bundle = tmp_path / "micro"
    bundle.mkdir()
    (bundle / "kerasnets_model.h").write_text(codegen.umbrella_header("shuffle5d", "shuffle5d"))
    (bundle / "shuffle5d_model_data.cc").write_text(codegen.model_data_source("shuffle5d", tflite))
    refused = r"(?s)shuffle5d cannot run on TFLite Micro.*TRANSPOSE \(layer shuffle_transpose\): 5-D"
    with pytest.raises(codegen.MicroExportError, match=refused):
        firmware_build.build_firmware(bundle, TREES["cmsis_nn"], out_dir=tmp_path / "build",
                                      cache_dir=firmware_cache["dir"])
    assert not (tmp_path / "build").exists()


def test_errors_name_the_argument(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="`target`"):
        firmware_build.build_tflm_library(tmp_path, "esp32")
    with pytest.raises(FileNotFoundError, match="`tflm_tree`"):
        firmware_build.resolve_tree(tmp_path / "missing")
    with pytest.raises(ValueError, match="`tflm_tree`"):
        firmware_build.resolve_tree(tmp_path)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(firmware_build.FirmwareError, match="apt-get install qemu-system-arm"):
        firmware_build.qemu_command("fw.elf")
    with pytest.raises(firmware_build.FirmwareError, match="gcc-arm-none-eabi"):
        firmware_build.build_tflm_library(tmp_path, "mps2-an386")


@pytest.mark.skipif(not shutil.which("g++"), reason="g++ is installed by scripts/bootstrap.sh")
def test_library_key_follows_the_tree_content_not_its_place(tmp_path):
    for place in ("a", "b"):
        header = tmp_path / place / "tree" / "tensorflow" / "lite" / "micro" / "micro_interpreter.h"
        header.parent.mkdir(parents=True)
        header.write_text("// same content\n")
    tool = {"cxx": "g++"}
    keys = [firmware_build._tree_key(str(tmp_path / p / "tree"), "host",
                                     firmware_build._flags(str(tmp_path / p / "tree"), "host", "reference"), tool)
            for p in ("a", "b")]
    assert keys[0] == keys[1]
    (tmp_path / "b" / "tree" / "tensorflow" / "lite" / "micro" / "micro_interpreter.h").write_text("// changed\n")
    assert firmware_build._tree_key(str(tmp_path / "b" / "tree"), "host", firmware_build._flags(
        str(tmp_path / "b" / "tree"), "host", "reference"), tool) != keys[0]


def test_firmware_tests_share_one_worker_so_each_library_is_built_once(request):
    """Under `pytest -n` with pytest.ini's --dist loadgroup, xdist appends the group to the node id
    and schedules the group on one worker; a pytest it cannot do that with (pytest 9 with xdist
    3.8) would build every TFLM library on both workers and lengthen the run by their build time."""
    if not getattr(request.config.option, "loadgroup", False):
        pytest.skip("not run by pytest-xdist with --dist loadgroup")
    assert request.node.nodeid.endswith("@firmware")


def test_parse_output_reads_chunked_outputs_and_each_check():
    text = ("kn-model m arena 100\nkn-output 0 0 1 2\nkn-output 0 2 3\nkn-ticks 0 0000000007 per-second 25\n"
            "kn-check 0 max-diff 0 PASS\nkn-tensor 5 bytes 16 crc32 0000abcd expected 0000abcd PASS\n"
            "kn-arena used 90 of 100\n~~~ALL TESTS PASSED~~~\n")
    parsed = firmware_build.parse_output(text)
    assert parsed["outputs"].tolist() == [[1, 2, 3]] and parsed["ticks"] == [7] and parsed["checks"] == [True]
    assert parsed["tensors"] == [{"index": 5, "bytes": 16, "crc32": 0xabcd, "expected": 0xabcd, "passed": True}]
    assert parsed["arena_used"] == 90 and parsed["arena_size"] == 100 and parsed["passed"]
    assert not firmware_build.parse_output(text + "kn-fault CPU fault\n")["passed"]
    assert not firmware_build.parse_output(text.replace("max-diff 0 PASS", "max-diff 2 FAIL"))["passed"]
    assert not firmware_build.parse_output(text.replace("0000abcd PASS", "0000abce FAIL"))["passed"]


@needs_toolchain
def test_bench_cortex_m4_command_checks_the_board_against_the_interpreter(firmware_cache):
    """`kerasnets bench --target cortex-m4` as a user runs it: one JSON line with bit-exactness
    on two real inputs, QEMU's instruction count, the clock estimate and the ELF's flash and RAM."""
    import subprocess
    import sys

    def bench(*args):
        return subprocess.run([sys.executable, "-c", "from kerasnets.tools.cli import run; run()", "bench",
                               "--target=cortex-m4", "--model=resnet8", *args], capture_output=True, text=True,
                              timeout=1800, env={**os.environ, "KERASNETS_CACHE": firmware_cache["dir"],
                                                 "KERASNETS_TFLM_TREE": TREES["reference"]})

    done = bench("--clock_mhz=80")
    assert done.returncode == 0, done.stderr[-3000:]
    row = json.loads(done.stdout.splitlines()[-1])
    assert row["bit_exact"] is True and row["inputs_checked"] == 2 and row["kernels"] == "reference"
    assert row["instructions"] > 12.5e6  # resnet8 is 12.5M MACs: at least one instruction each
    assert row["est_ms"] == round(row["instructions"] / 80e3, 3)
    assert row["flash_bytes"] > 78_000 and row["ram_bytes"] > row["arena_bytes"] >= row["arena_bytes_used"] > 0
    refused = bench("--kernels=cmsis_nn")
    assert refused.returncode == 2
    assert "--kernels=cmsis_nn" in refused.stderr and "--tflm_tree" in refused.stderr
