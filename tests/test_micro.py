"""TFLite Micro export: generated C/C++ compiles, holds the exact bytes, exact ops, measured arena
and golden pairs that tell a working port from a broken one; the lint refuses what TFLite Micro
cannot run, before anything is written, and a TFLite Micro abort is an error, not a dead process."""
import json
import re
import shutil
import subprocess
import zlib

import numpy as np
import pytest
import tf_keras as keras

import kerasnets
from kerasnets.micro import arena, codegen
from kerasnets.micro.ops import RESOLVER_METHOD
from kerasnets.pipelines import convert, tflite_file
from conftest import calibrate_batchnorm

L = keras.layers
READER = r"""
#include <cstdio>
#include "{ident}_model_data.h"
#include "{ident}_model_settings.h"
#include "{ident}_golden.h"
int main() {{
  std::fwrite(g_{ident}_model_data, 1, g_{ident}_model_data_size, stdout);
  std::fwrite({ident}_model::kGoldenInputs, 1, sizeof({ident}_model::kGoldenInputs), stdout);
  std::fwrite({ident}_model::kGoldenOutputs, 1, sizeof({ident}_model::kGoldenOutputs), stdout);
  std::fprintf(stderr, "%d %d %d %d %.9g %d %d %s\n", {ident}_model::kGoldenCount, {ident}_model::kInputHeight,
               {ident}_model::kInputWidth, {ident}_model::kInputChannels,
               {ident}_model::kInputScale, {ident}_model::kInputZeroPoint,
               {ident}_model::kTensorArenaSize, {ident}_model::kCategoryLabels[1]);
  return reinterpret_cast<unsigned long>(g_{ident}_model_data) % 16 == 0 ? 0 : 3;
}}
"""


def _quantised(tflite, images):
    return convert.quantize_input(images, convert.litert_interpreter(tflite, reference=True).get_input_details()[0])


@pytest.fixture(scope="module", params=["resnet8", "shufflenetv2_050_cifar"])
def exported(request, tmp_path_factory, digit_batches):
    name = request.param
    model = kerasnets.create_model(name)
    images = digit_batches(model.input_shape[1:], 16)
    calibrate_batchnorm(model, images)
    tflite = convert.to_int8(model, images)
    out = tmp_path_factory.mktemp(name)
    labels = [f"class {i}" for i in range(10)]
    report = codegen.emit(tflite, out, name, labels=labels, golden_inputs=_quantised(tflite, images))
    assert (out / "firmware" / "main.cc").exists() and (out / "kerasnets_model.h").exists()
    return name, tflite, out, report


@pytest.mark.skipif(not shutil.which("g++"), reason="g++ is installed by scripts/bootstrap.sh")
def test_generated_sources_compile_and_hold_the_model_bytes(exported, tmp_path):
    name, tflite, out, report = exported
    ident = codegen.c_identifier(name)
    (tmp_path / "reader.cc").write_text(READER.format(ident=ident))
    binary = tmp_path / "reader"
    subprocess.run(["g++", "-std=c++17", "-Wall", "-Wextra", "-Werror", f"-I{out}", str(tmp_path / "reader.cc"),
                    str(out / f"{ident}_model_data.cc"), "-o", str(binary)], check=True)
    run = subprocess.run([str(binary)], capture_output=True, check=True)
    assert run.stdout[:len(tflite)] == tflite
    graph = tflite_file.read_tflite(tflite)
    count, h, w, c, scale, zero_point, arena_size, label = run.stderr.decode().split(" ", 7)
    assert int(count) == codegen.GOLDEN_COUNT == 2
    golden = np.frombuffer(run.stdout[len(tflite):], np.int8)
    inputs = golden[:2 * int(np.prod(graph.inputs[0].shape))].reshape(2, *graph.inputs[0].shape[1:])
    outputs = golden[inputs.size:].reshape(2, -1)
    assert np.array_equal(inputs, report["golden_inputs"])
    # the expected outputs are TFLite Micro's, differ between the inputs and are not one value repeated
    assert np.array_equal(outputs, arena.run_micro(tflite, inputs))
    assert not np.array_equal(outputs[0], outputs[1])
    assert all(row.min() < row.max() for row in outputs)
    assert (int(h), int(w), int(c)) == graph.inputs[0].shape[1:]
    assert float(scale) == pytest.approx(graph.inputs[0].scale, rel=1e-7)
    assert int(zero_point) == graph.inputs[0].zero_point
    assert int(arena_size) == report["arena_bytes"] + report["headroom_bytes"]
    assert label.strip() == "class 1"


def test_select_golden_skips_constant_and_repeated_outputs():
    outputs = np.array([[-102, -102, -102], [1, 2, 3], [1, 2, 3], [0, 0, 0], [3, 2, 1]], np.int8)
    assert codegen.select_golden(outputs) == [1, 4]
    assert codegen.select_golden(outputs[:4]) == [1]
    assert codegen.select_golden(outputs, count=3) == [1, 4]


def test_golden_inputs_with_identical_outputs_are_rejected_and_nothing_written(exported, tmp_path):
    name, tflite, _, report = exported
    same = np.repeat(report["golden_inputs"][:1], 4, axis=0)  # four copies: one output, four times
    with pytest.raises(ValueError, match=r"`golden_inputs`: .* 1 distinct non-constant outputs for the 4 inputs"):
        codegen.emit(tflite, tmp_path / "out", name, golden_inputs=same)
    with pytest.raises(TypeError, match="`golden_inputs` must be int8"):
        codegen.emit(tflite, tmp_path / "out", name, golden_inputs=report["golden_inputs"].astype("float32"))
    with pytest.raises(ValueError, match="`golden_inputs` must hold at least 2 inputs"):
        codegen.emit(tflite, tmp_path / "out", name, golden_inputs=report["golden_inputs"][:1])
    with pytest.raises(ValueError, match="`golden_inputs` is needed"):
        codegen.emit(tflite, tmp_path / "out", name)
    assert not (tmp_path / "out").exists()


def test_tensor_checksums_are_the_reference_kernels(exported, tmp_path):
    """The CRC-32 of every activation tensor, from TFLite Micro, equals LiteRT's reference kernels'
    (an independent runtime, every tensor preserved) for the first golden input."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    name, tflite, _, report = exported
    emitted = codegen.emit(tflite, tmp_path, name, golden_inputs=report["golden_inputs"], tensor_checksums=True,
                           firmware=False)
    header = (tmp_path / f"{codegen.c_identifier(name)}_golden.h").read_text()
    table = [tuple(int(v, 0) for v in row) for row in re.findall(r"\{(\d+), (\d+), (0x[0-9a-f]{8})u\}", header)]
    graph = tflite_file.read_tflite(tflite)
    assert [index for index, _, _ in table] == [t.index for t in graph.tensors if not t.is_constant]
    interpreter = Interpreter(model_content=tflite, experimental_op_resolver_type=OpResolverType.BUILTIN_REF,
                              experimental_preserve_all_tensors=True)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], emitted["golden_inputs"][:1])
    interpreter.invoke()
    for index, size, crc in table:
        data = np.ascontiguousarray(interpreter.get_tensor(index)).tobytes()
        assert (len(data), zlib.crc32(data)) == (size, crc), index
    assert emitted["all_tensors_arena_bytes"] >= report["arena_bytes"] + sum(size for _, size, _ in table)


def test_op_resolver_lists_exactly_the_models_ops(exported):
    name, tflite, out, _ = exported
    header = (out / f"{codegen.c_identifier(name)}_op_resolver.h").read_text()
    registered = re.findall(r"resolver\.(Add\w+)\(\)", header)
    interpreter = convert.litert_interpreter(tflite, reference=True)  # an independent parser
    ops = {op["op_name"] for op in interpreter._get_ops_details()}
    assert sorted(registered) == sorted(RESOLVER_METHOD[op] for op in ops)
    assert f"MicroMutableOpResolver<kNumberOfOps>" in header
    assert f"constexpr int kNumberOfOps = {len(ops)};" in header


def test_arena_is_the_interpreters_and_runs_with_the_generated_size(exported):
    _, tflite, out, report = exported
    written = json.loads((out / "arena.json").read_text())
    assert written["arena_bytes"] == report["arena_bytes"] == arena.measure_arena(tflite)
    assert arena.measure_arena_in_child(tflite) == report["arena_bytes"]
    assert written["headroom_bytes"] >= codegen.MIN_HEADROOM
    interpreter = arena.micro_interpreter(tflite, written["arena_bytes"] + written["headroom_bytes"])
    details = interpreter.get_input_details(0)
    interpreter.set_input(np.zeros(details["shape"], details["dtype"]), 0)
    interpreter.invoke()
    with pytest.raises(Exception):
        arena.micro_interpreter(tflite, written["arena_bytes"] // 4)


def test_arena_covers_what_the_allocator_borrows_while_planning(tmp_path):
    """A deep net on a tiny input (as mgic_resnet20_cifar at 4x4, which failed on CMSIS-NN with "Too
    many buffers"): TFLite Micro's planning needs more free arena than the activations it plans, so
    the measured total plus 10% fails to allocate; the written arena allocates."""
    inp = keras.Input((2, 2, 4))
    x = inp
    for i in range(40):
        x = L.Conv2D(4, 1, kernel_initializer="orthogonal", name=f"conv{i}")(x)  # keeps the scale
    model = keras.Model(inp, L.Conv2D(4, 1, name="head")(x))
    images = np.random.default_rng(0).normal(size=(8, 2, 2, 4)).astype("float32")
    tflite = convert.to_int8(model, images)
    report = codegen.emit(tflite, tmp_path, "deep_narrow", firmware=False, golden_inputs=_quantised(tflite, images))
    measured = report["arena_bytes"]
    assert report["headroom_bytes"] >= codegen.planning_bytes(tflite_file.read_tflite(tflite)) > 0.5 * measured
    with pytest.raises(Exception):
        arena.micro_interpreter(tflite, measured + max(codegen.MIN_HEADROOM, measured // 10))
    arena.micro_interpreter(tflite, measured + report["headroom_bytes"])


@pytest.mark.skipif(not shutil.which("arm-none-eabi-g++"), reason="installed by scripts/bootstrap.sh")
def test_cross_compiles_for_cortex_m(exported, tmp_path):
    name, tflite, out, _ = exported
    ident = codegen.c_identifier(name)
    obj = tmp_path / "model_data.o"
    subprocess.run(["arm-none-eabi-g++", "-mcpu=cortex-m4", "-mthumb", "-Os", "-std=c++17", "-Wall",
                    "-Werror", "-c", str(out / f"{ident}_model_data.cc"), "-o", str(obj)], check=True)
    size = subprocess.run(["arm-none-eabi-size", "-A", str(obj)], capture_output=True, text=True, check=True)
    rodata = sum(int(line.split()[1]) for line in size.stdout.splitlines() if line.startswith(".rodata"))
    print(f"{name}: {rodata} flash bytes for the model array")
    assert len(tflite) <= rodata < len(tflite) + 64


def test_c_identifier():
    assert codegen.c_identifier("MobileNet-v2 1.0") == "mobilenet_v2_1_0"
    assert codegen.c_identifier("8bit") == "m_8bit"
    with pytest.raises(ValueError, match="C identifier"):
        codegen.c_identifier("---")


def _textbook_shuffle_model():
    inp = L.Input((8, 8, 8))
    x = L.Conv2D(8, 1, name="pw")(inp)
    x = L.Reshape((8, 8, 2, 4), name="shuffle_split")(x)
    x = L.Permute((1, 2, 4, 3), name="shuffle_transpose")(x)
    x = L.Reshape((8, 8, 8), name="shuffle_merge")(x)
    return keras.Model(inp, L.Conv2D(4, 1, name="head")(x), name="textbook")


def test_lint_refuses_a_5d_transpose_and_writes_nothing(tmp_path, digit_batches):
    model = _textbook_shuffle_model()
    tflite = convert.to_int8(model, np.random.default_rng(0).normal(size=(8, 8, 8, 8)).astype("float32"))
    with pytest.raises(codegen.MicroExportError, match=r"TRANSPOSE \(layer shuffle_transpose\).*5-D") as info:
        codegen.emit(tflite, tmp_path / "out", "textbook")
    assert "channel_shuffle" in str(info.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("mode, problem", [("dynamic", "hybrid op"), ("fp32", "float op")])
def test_lint_refuses_float_and_hybrid_models(mode, problem, tmp_path, digit_batches):
    model = kerasnets.create_model("resnet8")
    tflite = convert.export(model, mode)
    with pytest.raises(codegen.MicroExportError, match=problem):
        codegen.emit(tflite, tmp_path, "resnet8")
    assert not list(tmp_path.iterdir())


def test_max_arena_is_enforced(exported, tmp_path):
    name, tflite, _, report = exported
    with pytest.raises(ValueError, match=r"`max_arena=1000`"):
        codegen.emit(tflite, tmp_path / "o", name, max_arena=1000, golden_inputs=report["golden_inputs"])


def test_corrupt_model_is_named(tmp_path):
    with pytest.raises(ValueError, match="broken.tflite is a corrupt or truncated TFLite model"):
        codegen.emit(b"\x1c\x00\x00\x00TFL3" + b"\x00" * 40, tmp_path, "broken.tflite")


def test_arena_measured_in_a_child_reports_a_crash_as_an_error():
    with pytest.raises(RuntimeError, match="arena measurement failed"):
        arena.measure_arena_in_child(b"not a model")


def test_lint_refuses_a_softmax_tflite_micro_would_abort_on(tmp_path):
    inp = keras.Input((8, 8, 3))
    x = L.GlobalAveragePooling2D()(L.Conv2D(4, 3, name="conv")(inp))
    head = L.Dense(10, activation="softmax", name="head")
    model = keras.Model(inp, head(x))
    head.set_weights([w * 1e-9 for w in head.get_weights()])  # logits spanning ~1e-9
    tflite = convert.to_int8(model, np.random.default_rng(0).normal(size=(8, 8, 8, 3)).astype("float32"))
    with pytest.raises(codegen.MicroExportError, match=r"SOFTMAX \(layer head\).*softmax input scale") as refused:
        codegen.emit(tflite, tmp_path / "out", "flat_logits")
    assert not (tmp_path / "out").exists()
    # the advice works when followed: the zoo model it names ends without a softmax
    advice = re.search(r"`classifier_activation=(.+?)`", str(refused.value)).group(1)
    import kerasnets

    followed = kerasnets.create_model("resnet8", classifier_activation=eval(advice))
    assert followed.layers[-1].activation is keras.activations.linear
    # Without the lint, TFLite Micro would abort: in a child process that is an exception, not a dead caller.
    with pytest.raises(RuntimeError, match="killed by SIGABRT"):
        arena.run_micro_in_child(tflite, np.zeros((1, 8, 8, 3), np.int8))


def test_a_tflite_micro_abort_on_a_golden_input_is_an_error_and_writes_nothing(tmp_path):
    """TFLite Micro's int8 softmax aborts in Eval when its sum of exponentials passes 2^8 (over 256
    of the logits close to the largest), as on an untrained 1000-class net's near-uniform logits:
    here 1000 classes and an input of zeros, which makes them all equal. The lint cannot see it (it
    depends on the input); emit runs TFLite Micro in a child, so the caller gets an error and goes on."""
    inp = keras.Input((8, 8, 3))
    head = L.Dense(1000, activation="softmax", name="head")
    model = keras.Model(inp, head(L.GlobalAveragePooling2D()(L.Conv2D(4, 3, name="conv")(inp))))
    head.set_weights([head.get_weights()[0], np.zeros(1000, "float32")])
    images = np.random.default_rng(0).normal(size=(8, 8, 8, 3)).astype("float32")
    tflite = convert.to_int8(model, images)
    assert not codegen.lint_mod.errors(codegen.lint_mod.lint(tflite_file.read_tflite(tflite)))
    golden = _quantised(tflite, np.concatenate([np.zeros((1, 8, 8, 3), "float32"), images]))
    with pytest.raises(arena.MicroCrash, match=r"TFLite Micro crashed on the golden inputs for flat_head, so "
                                           r"nothing was written: .*killed by SIGABRT"):
        codegen.emit(tflite, tmp_path / "out", "flat_head", golden_inputs=golden)
    assert not (tmp_path / "out").exists()
