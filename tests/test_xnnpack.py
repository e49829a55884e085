"""lower_for_xnnpack: the int8 ops XNNPACK has no int8 kernel for run as float islands, so XNNPACK
(LiteRT's default CPU path) takes every family's int8 graph as whole as its fp32 graph, and the
outputs stay those of the int8 model; a depthwise convolution with a channel multiplier becomes
copies and a multiplier-1 depthwise convolution, a narrow int8 convolution one that computes
several columns at once, and a narrow int8 channel shuffle one 1x1 convolution, all computing
exactly the same."""
import numpy as np
import pytest
import tf_keras as keras

import kerasnets
from kerasnets import layers as knl
from kerasnets.micro import lint
from kerasnets.pipelines import convert, tflite_file, xnnpack
from kerasnets.tools import bench_child
from conftest import calibrate_batchnorm, one_per_family

SHAPE = (32, 32, 3)


def _delegation(tflite: bytes) -> tuple[int, str]:
    """(pieces XNNPACK runs, ops it leaves to TFLite's kernels) when LiteRT loads `tflite`."""
    interpreter = convert.litert_interpreter(tflite)  # default op resolver: XNNPACK applied
    return bench_child.xnnpack_partitions(interpreter), bench_child.ops_outside_xnnpack(interpreter)


def _island_model():
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, padding="same")(inputs)
    x = knl.HardSwish()(x)
    x = keras.layers.AveragePooling2D(2)(x)
    x = keras.layers.Conv2D(16, 1)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x))


def test_ops_without_an_int8_kernel_run_as_float_islands_inside_xnnpack(digit_batches):
    images = digit_batches((16, 16, 3), 96)
    plain = convert.export(_island_model(), "int8", images[:32])
    lowered = xnnpack.lower_for_xnnpack(plain)

    assert _delegation(plain)[1] == "AVERAGE_POOL_2D:1 HARD_SWISH:1 SOFTMAX:1"  # what the lowering is for
    assert _delegation(lowered) == (1, "")
    graph = tflite_file.read_tflite(lowered)
    made_by = {t.index: op for op in graph.ops for t in op.outputs}
    for op in graph.ops:
        if op.name in ("HARD_SWISH", "AVERAGE_POOL_2D", "SOFTMAX"):
            assert op.inputs[0].dtype == op.outputs[0].dtype == "float32", op.name
            assert made_by[op.inputs[0].index].name == "DEQUANTIZE"
    assert graph.inputs[0].dtype == graph.outputs[0].dtype == "int8"  # the model's interface is kept

    # each island rounds once, at the int8 op's own output scale: the outputs stay the int8 model's
    x8 = convert.quantize_input(images[32:], convert.litert_interpreter(plain).get_input_details()[0])
    expected = convert.run_litert(plain, x8, reference=True).astype(int)
    got = convert.run_litert(lowered, x8).astype(int)  # XNNPACK, as a phone runs it
    assert np.abs(got - expected).max() <= 1
    assert (got != expected).mean() < 0.05  # measured 2% (XNNPACK vs reference kernels alone: 0.6%)


@pytest.mark.parametrize("name", one_per_family())
def test_every_family_int8_graph_runs_in_xnnpack_as_whole_as_its_fp32_graph(name, digit_batches):
    model = kerasnets.create_model(name, input_shape=SHAPE, classes=10)
    images = digit_batches(SHAPE, 16)
    calibrate_batchnorm(model, images)
    pieces, outside = _delegation(xnnpack.lower_for_xnnpack(convert.export(model, "int8", images)))
    if not outside:
        assert pieces == 1
        return
    # ops XNNPACK refuses in fp32 too (a CONCATENATION of many inputs) are no int8 gap
    _, fp32_outside = _delegation(convert.export(model, "fp32"))
    assert set(outside.split()) <= set(fp32_outside.split()), (outside, fp32_outside)


def _multiplier_model():
    inputs = keras.Input((16, 16, 8))
    x = keras.layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2)(inputs)
    x = keras.layers.Conv2D(16, 1)(x)  # 16 channels: no narrow convolution to pack (rewrite 3)
    x = keras.layers.DepthwiseConv2D(3, strides=2, padding="same", depth_multiplier=3, activation="relu")(x)
    return keras.Model(inputs, keras.layers.Conv2D(16, 1)(x))


@pytest.mark.parametrize("mode", ["fp32", "int8"])
def test_a_depthwise_channel_multiplier_is_split_into_copies_exactly(mode):
    model = _multiplier_model()
    images = np.random.default_rng(0).uniform(-1, 1, (40, 16, 16, 8)).astype("float32")
    plain = convert.export(model, mode, images[:16])
    lowered = xnnpack.lower_for_xnnpack(plain)
    graph = tflite_file.read_tflite(lowered)
    assert [op.name for op in graph.ops] == ["CONCATENATION", "DEPTHWISE_CONV_2D", "CONV_2D"] * 2
    for op in graph.ops:
        if op.name == "DEPTHWISE_CONV_2D":  # multiplier 1: as many channels out as in
            assert op.inputs[0].shape[-1] == op.outputs[0].shape[-1]
    inputs = images[16:]
    if mode == "int8":
        inputs = convert.quantize_input(inputs, convert.litert_interpreter(plain).get_input_details()[0])
    expected = convert.run_litert(plain, inputs, reference=True)
    got = convert.run_litert(lowered, inputs, reference=True)
    if mode == "int8":  # same integers, channel by channel
        np.testing.assert_array_equal(got, expected)
    else:
        np.testing.assert_allclose(got, expected, atol=1e-5)


def test_a_float_export_ships_the_lowered_graph_and_int8_the_plain_one(tmp_path):
    from kerasnets.tools import export

    inputs = keras.Input((16, 16, 3))
    x = keras.layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2)(inputs)
    x = knl.HardSwish()(keras.layers.Conv2D(8, 1)(x))
    model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(keras.layers.GlobalAveragePooling2D()(x)))
    ops = {}
    for mode in ("fp32", "int8"):
        summary = export.export_model(model, name=f"m_{mode}", mode=mode, out_dir=str(tmp_path), min_agreement=0.0)
        ops[mode] = summary["ops"]
    assert ops["fp32"][:2] == ["CONCATENATION", "DEPTHWISE_CONV_2D"]  # lowered, and through the parity gate
    assert "CONCATENATION" not in ops["int8"] and "HARD_SWISH" in ops["int8"]  # what TFLite Micro and Vela take
    app = tflite_file.read_tflite((tmp_path / "m_int8_app.tflite").read_bytes())
    assert "CONCATENATION" in app.op_names and "DEQUANTIZE" in app.op_names
    # the deployment lint tells a user who hands the app copy to TFLite Micro which file to use
    plain = tflite_file.read_tflite((tmp_path / "m_int8.tflite").read_bytes())
    assert not [f for f in lint.errors(lint.lint(plain, npu=False)) if "float op" in f.problem]
    islands = [f for f in lint.errors(lint.lint(app, npu=False)) if "float op" in f.problem]
    assert {f.op for f in islands} == {"HARD_SWISH", "SOFTMAX"}
    assert all("lowered for XNNPACK" in f.problem and "`<name>.tflite`" in f.fix for f in islands)


def test_a_model_without_such_ops_comes_back_unchanged(digit_batches):
    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(4, 3)(inputs))
    plain = convert.export(model, "int8", digit_batches((8, 8, 3), 8))
    assert xnnpack.lower_for_xnnpack(plain) == plain


def test_bytes_that_are_no_model_are_refused_by_name():
    with pytest.raises(ValueError, match="`tflite` is not a TFLite model"):
        xnnpack.lower_for_xnnpack(b"not a model")


def _narrow_model():
    inputs = keras.Input((16, 14, 8))
    a = keras.layers.Conv2D(4, 1, activation="relu")(inputs)  # 1x1, 4 out: 2 columns at once (14 % 4, 14 % 3 != 0)
    b = keras.layers.DepthwiseConv2D(3, padding="same", activation="relu")(a)  # reads the packed tensor
    c = keras.layers.Concatenate()([a, b])
    d = keras.layers.DepthwiseConv2D(5, padding="same")(c)  # 8 channels, a kernel wider than the group
    e = keras.layers.Conv2D(6, 1)(d)
    f = keras.layers.DepthwiseConv2D(3, strides=2, padding="same")(e)  # stride 2: left as it is
    g = keras.layers.Conv2D(16, 1)(f)  # 16 channels fill the kernel already: left as it is
    return keras.Model(inputs, keras.layers.Conv2D(4, 1)(g))  # width 7 has no divisor to pack by


def _batched(tflite, inputs):
    interpreter = convert.litert_interpreter(tflite)
    index = interpreter.get_input_details()[0]["index"]
    interpreter.resize_tensor_input(index, list(inputs.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(index, inputs)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def test_narrow_int8_convolutions_are_packed_along_the_width_exactly():
    images = np.random.default_rng(0).uniform(-1, 1, (40, 16, 14, 8)).astype("float32")
    plain = convert.export(_narrow_model(), "int8", images[:16])
    lowered = xnnpack.lower_for_xnnpack(plain)
    graph = tflite_file.read_tflite(lowered)
    packed = [op for op in graph.ops if op.name == "CONV_2D" and list(op.inputs[0].shape[1:3]) == [16, 7]]
    assert [list(op.outputs[0].shape) for op in packed] == [[1, 16, 7, 8], [1, 16, 7, 8], [1, 16, 7, 16], [1, 16, 7, 12]]
    assert "DEPTHWISE_CONV_2D" in graph.op_names  # the stride-2 one
    assert [op.name for op in graph.ops].count("RESHAPE") == 5  # in, back (for the concatenation), in, back, and back after the 1x1
    x8 = convert.quantize_input(images[16:], convert.litert_interpreter(plain).get_input_details()[0])
    np.testing.assert_array_equal(convert.run_litert(lowered, x8, reference=True),
                                  convert.run_litert(plain, x8, reference=True))
    np.testing.assert_array_equal(convert.run_litert(lowered, x8), convert.run_litert(plain, x8))  # XNNPACK
    assert _delegation(lowered) == (1, "")
    np.testing.assert_array_equal(_batched(lowered, x8[:4]), _batched(plain, x8[:4]))  # any batch, as before
    # fp32 kernels gain nothing from packing: a float model keeps its convolutions
    fp32 = convert.export(_narrow_model(), "fp32")
    assert "RESHAPE" not in tflite_file.read_tflite(xnnpack.lower_for_xnnpack(fp32)).op_names
    # nor does an int8 model for a CPU without int8 dot products (zeros multiplied at fp32 speed or below)
    assert "RESHAPE" not in tflite_file.read_tflite(xnnpack.lower_for_xnnpack(plain, int8_dot_product=False)).op_names


def test_a_ghost_net_int8_graph_is_packed_and_computes_the_same(digit_batches):
    model = kerasnets.create_model("ghostnet_050", input_shape=(64, 64, 3), classes=10,
                                   classifier_activation="linear")  # no softmax island: exact comparison
    images = digit_batches((64, 64, 3), 24)
    calibrate_batchnorm(model, images[:16])
    plain = convert.export(model, "int8", images[:16])
    lowered = xnnpack.lower_for_xnnpack(plain)
    reshapes = [[op.name for op in tflite_file.read_tflite(m).ops].count("RESHAPE") for m in (plain, lowered)]
    assert reshapes[1] > reshapes[0], reshapes
    x8 = convert.quantize_input(images[16:], convert.litert_interpreter(plain).get_input_details()[0])
    np.testing.assert_array_equal(convert.run_litert(lowered, x8, reference=True),
                                  convert.run_litert(plain, x8, reference=True))


def _shuffle_model():
    from kerasnets import blocks

    inputs = keras.Input((8, 8, 32))
    x = blocks.channel_shuffle(keras.layers.Conv2D(48, 1)(inputs), 2, name="narrow")  # 48 channels: a conv
    x = blocks.channel_shuffle(keras.layers.Conv2D(96, 1)(x), 2, name="wide")  # blocks of 96: a float island
    x = keras.layers.Reshape((64, 16, 16))(keras.layers.Conv2D(256, 1)(x))
    return keras.Model(inputs, keras.layers.Permute((1, 3, 2))(x))  # blocks of 256: faster in int8


def test_a_channel_shuffle_runs_as_one_int8_convolution_or_in_float_exactly():
    images = np.random.default_rng(0).uniform(-1, 1, (24, 8, 8, 32)).astype("float32")
    plain = convert.export(_shuffle_model(), "int8", images[:16])
    lowered = xnnpack.lower_for_xnnpack(plain)
    graph = tflite_file.read_tflite(lowered)
    transposes = [op for op in graph.ops if op.name == "TRANSPOSE"]
    assert [op.outputs[0].dtype for op in transposes] == ["float32", "int8"]  # the 48-channel one is gone
    permutations = [op for op in graph.ops if op.name == "CONV_2D" and list(op.inputs[1].shape) == [48, 1, 1, 48]]
    assert len(permutations) == 1
    assert [op.name for op in graph.ops].count("RESHAPE") == 3  # the wide shuffle's two and the last: its own are gone
    x8 = convert.quantize_input(images[16:], convert.litert_interpreter(plain).get_input_details()[0])
    np.testing.assert_array_equal(convert.run_litert(lowered, x8, reference=True),
                                  convert.run_litert(plain, x8, reference=True))
    np.testing.assert_array_equal(convert.run_litert(lowered, x8), convert.run_litert(plain, x8))  # XNNPACK
    assert _delegation(lowered) == (1, "")
    # XNNPACK's fp32 convolution permutes slower than its transpose: a float model keeps its shuffles
    fp32 = tflite_file.read_tflite(xnnpack.lower_for_xnnpack(convert.export(_shuffle_model(), "fp32")))
    assert [op.name for op in fp32.ops].count("TRANSPOSE") == 3
    # so does an int8 model for a CPU without int8 dot products: the narrow shuffle is an island too
    islands = xnnpack.lower_for_xnnpack(plain, int8_dot_product=False)
    transposes = [op for op in tflite_file.read_tflite(islands).ops if op.name == "TRANSPOSE"]
    assert [op.outputs[0].dtype for op in transposes] == ["float32", "float32", "int8"]
    np.testing.assert_array_equal(convert.run_litert(islands, x8), convert.run_litert(plain, x8))


def test_a_shufflenet_int8_graph_loses_its_narrow_shuffles_and_computes_the_same(digit_batches):
    model = kerasnets.create_model("shufflenetv2_050_cifar", classes=10, classifier_activation="linear")
    images = digit_batches((32, 32, 3), 24)
    calibrate_batchnorm(model, images[:16])
    plain = convert.export(model, "int8", images[:16])
    lowered = xnnpack.lower_for_xnnpack(plain)
    transposes = [[op.name for op in tflite_file.read_tflite(m).ops].count("TRANSPOSE") for m in (plain, lowered)]
    assert transposes == [13, 10], transposes  # stage 2's three 48-channel shuffles are convolutions
    x8 = convert.quantize_input(images[16:], convert.litert_interpreter(plain).get_input_details()[0])
    np.testing.assert_array_equal(convert.run_litert(lowered, x8, reference=True),
                                  convert.run_litert(plain, x8, reference=True))
    np.testing.assert_array_equal(convert.run_litert(lowered, x8), convert.run_litert(plain, x8))


def test_a_shuffle_whose_output_is_quantised_otherwise_keeps_its_copies():
    images = np.random.default_rng(0).uniform(-1, 1, (16, 8, 8, 32)).astype("float32")
    model = tflite_file.unpack(convert.export(_shuffle_model(), "int8", images))
    merged = [t for t in model.subgraphs[0].tensors if b"narrow_merge" in (t.name or b"")]
    assert len(merged) == 1
    merged[0].quantization.scale = [2 * merged[0].quantization.scale[0]]  # RESHAPE copies integers as they are
    lowered = tflite_file.read_tflite(xnnpack.lower_for_xnnpack(tflite_file.pack(model)))
    assert [op.name for op in lowered.ops].count("TRANSPOSE") == 3  # no convolution would give those integers
