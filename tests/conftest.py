"""Shared test helpers: small real inputs and BatchNorm statistics that make int8 outputs informative."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tf_keras as keras  # noqa: E402

import kerasnets  # noqa: E402
from kerasnets.pipelines import data  # noqa: E402
from kerasnets.pipelines.convert import calibrate_batchnorm  # noqa: E402,F401  (tests import it from here)


# Variants whose whole-registry checks (build with every head, serialisation, int8 chain,
# pruning) are too heavy to repeat in every test run: each family's other members take the same
# code paths at a fraction of the cost, so the default run covers every family; `pytest -m slow`
# runs these too. Published params/MACs are checked on every variant in every run.
HEAVY_VARIANTS = {
    "g_ghost_regnetx_040", "g_ghost_regnetx_080", "g_ghost_regnetx_160", "threshnet95",
    "triplenet_b", "hardnet68ds", "hardnet85", "densenet121", "condensenet74_g8",
    "mobilenet_v3_large_100", "ghostnet_100", "ghostnet_130", "shufflenetv2_100", "shufflenetv2_150",
    "shufflenetv2_200", "shufflenet_g1", "shufflenet_g2", "shufflenet_g4", "shufflenet_g8",
    "shufflenetv2_100_cifar", "shufflenetv2_150_cifar", "augshufflenet_100_cifar",
    "augshufflenet_150_cifar", "resnet56_cifar",
}


# The int8 chain (QAT, one or two full conversions, TFLite Micro) is the costliest check of all:
# the default run proves it on one variant of each family (two where a family's variants take
# different code paths); `pytest -m slow` on every variant.
CHAIN_HEAVY_VARIANTS = HEAVY_VARIANTS | {
    "condensenet74_g4", "condensenet86_cifar", "condensenext_cifar", "densenet_bc_100_k12_cifar",
    "ghost_resnet56_cifar", "ghost_vgg16_cifar", "hardnet68", "mgic_mobilenet_v3_small",
    "shufflenet_g3", "shufflenetv2_050",
}


def one_per_family(exclude=CHAIN_HEAVY_VARIANTS):
    """The first variant of each family (by paper) outside `exclude`: the default run's int8 chain
    uses these."""
    return kerasnets.one_per_family(exclude)


def registry_params(names, heavy=HEAVY_VARIANTS):
    """pytest params over model names, the heavy ones marked slow."""
    return [pytest.param(n, marks=pytest.mark.slow) if n in heavy else n for n in names]


def small_input_shape(name):
    """Input for the fast checks: the default where it is CIFAR-sized, else twice the minimum."""
    info = kerasnets.model_info(name)
    height = info.input_shape[0]
    side = height if height <= 64 else max(2 * info.min_size, 32)
    return (side, side, info.input_shape[2])


@pytest.fixture(autouse=True)
def _seeded():
    """Every test starts from the same random state: fresh weights, shuffles and dropout repeat."""
    keras.utils.set_random_seed(0)


@pytest.fixture(scope="session")
def digit_batches():
    cache = {}

    def get(shape, count=8):
        key = (tuple(shape), count)
        if key not in cache:
            cache[key] = data.digits_images(shape, count)[0]
        return cache[key]

    return get


def assert_same_outputs(a, b, atol=1e-5):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=atol, rtol=1e-4)


def int8_outputs(model, images, calibration=None):
    """(tflite, graph summary, int8 input, LiteRT reference outputs, TFLite Micro outputs) of
    `model` converted to full-integer int8 with builtin ops only and tensors of rank <= 4,
    calibrated on `calibration` (default: `images`)."""
    from kerasnets.micro import arena
    from kerasnets.pipelines import convert

    tflite = convert.to_int8(model, images if calibration is None else calibration)
    summary = convert.graph_summary(tflite)
    assert not [op for op in summary["ops"] if op.startswith(("FLEX", "CUSTOM"))], summary["ops"]
    too_deep = {t: r for t, r in summary["ranks"].items() if r > 4}
    assert not too_deep, f"tensors above 4-D break CMSIS-NN: {too_deep}"
    interpreter = convert.litert_interpreter(tflite, reference=True)
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    assert inp["dtype"] == np.int8 and out["dtype"] == np.int8
    x8 = convert.quantize_input(images, inp)
    return tflite, summary, x8, convert.run_litert(tflite, x8, reference=True), arena.run_micro(tflite, x8)


# TFLite Micro's int8 FULLY_CONNECTED and MUL requantise as gemmlowp does, rounding twice; LiteRT's
# reference kernels round once. So at an exact tie their outputs differ by 1 LSB, which later ops
# carry on: the one difference the int8 chain tests accept, and only where it starts.
ROUNDS_TWICE_IN_MICRO = ("FULLY_CONNECTED", "MUL")


def first_micro_divergence(tflite: bytes, item: np.ndarray):
    """The first op (graph order) whose output differs between TFLite Micro (every tensor kept) and
    LiteRT's reference kernels on int8 input `item`: {op, inputs_equal, max_lsb, differing (output
    values), size (of the output)}, or None."""
    from kerasnets.micro import arena
    from kerasnets.pipelines import convert

    reference = convert.litert_interpreter(tflite, reference=True, keep_tensors=True)
    reference.set_tensor(reference.get_input_details()[0]["index"], item[None])
    reference.invoke()
    ops = reference._get_ops_details()
    indices = sorted({t for op in ops for t in [*op["inputs"], *op["outputs"]] if t >= 0})
    micro = dict(zip(indices, arena.tensor_values(tflite, item, indices)))

    def both(index):
        ours = reference.get_tensor(index)
        return ours.astype(int), micro[index].reshape(ours.shape).astype(int)

    for op in ops:
        ours, theirs = both(op["outputs"][0])
        if not np.array_equal(ours, theirs):
            inputs = [both(i) for i in op["inputs"] if i >= 0]
            return {"op": op["op_name"], "inputs_equal": all(np.array_equal(a, b) for a, b in inputs),
                    "max_lsb": int(np.abs(ours - theirs).max()), "differing": int(np.sum(ours != theirs)),
                    "size": int(ours.size)}
    return None


def assert_micro_matches_reference(tflite: bytes, x8: np.ndarray, reference: np.ndarray, micro: np.ndarray):
    """TFLite Micro's int8 outputs equal LiteRT reference kernels' on inputs `x8`, up to the one
    difference allowed: where they differ, the first tensor where the two part is the output of an
    op of ROUNDS_TWICE_IN_MICRO, with identical inputs, 1 LSB apart on at most 2% of it (or one value)."""
    diff = np.abs(reference.astype(int) - micro)
    if not diff.any():
        return
    first = first_micro_divergence(tflite, x8[int(np.argmax(diff.reshape(len(diff), -1).any(axis=1)))])
    assert (first is not None and first["op"] in ROUNDS_TWICE_IN_MICRO and first["inputs_equal"]
            and first["max_lsb"] == 1 and first["differing"] <= max(1, 0.02 * first["size"])), \
        f"TFLite Micro differs from LiteRT reference by up to {diff.max()} LSB, first at {first}"
