"""QAT all the way to int8 for one variant of every family: the converted QAT model is the model
that was trained (what a user who trains with QAT deploys).

Each model is wrapped by `quantize.quantize_model`, trained for a few steps on real digits (so the
weights and every quantiser range move off their initial values), converted to full-integer int8,
and then:
(a) TFLite Micro gives the same int8 outputs as LiteRT's reference kernels, bit for bit (up to
    the 1-LSB FULLY_CONNECTED rounding difference test_zoo's int8 chain allows, confined the same way);
(b) no tensor is above 4-D (CMSIS-NN's limit);
(c) the int8 model reproduces the QAT Keras model it came from on 200 real images: top-1
    agreement >= 99%, an image whose int8 pick is within two output steps of the QAT model's top
    logit counting as agreeing (a tie that rounding decides), and median |logit error|
    <= 3% of the QAT model's logit range (a linear head, so that a softmax cannot hide an error).

Why those bounds: a faithful conversion differs from the fake-quant graph only by rounding (a
product rounded once in int8 where float rounds it later, BatchNorm folded into the weights), so
its logits stay within a few output steps, ~1% of the range (resnet8: median 0 steps). A real
mismatch (a missing BatchNorm, a quantiser that the converter places elsewhere) moves the logits
by 10-30% of the range. A net trained for a few steps is far from confident: its top two
logits are often within a couple of int8 output steps, and rounding alone then decides the strict
top-1 (augshufflenet_050_cifar: 95% strict, 97.5% counting one-step ties, at a median error of
0.5% of the range). Each of the two logits carries about one step of rounding (the output's own
plus what the layers before accumulate), so a margin under two steps is a tie; the strict figure
is printed beside it. 99% allows two other disagreements in 200.

Run time: each model costs a fixed 1-8 minutes (under load) of QAT wrapping, graph tracing and
conversion; the image counts hardly matter (hardnet39ds under load: 108 s training, 90 s
conversion and TFLite Micro, 18 s for the 200-image comparison). So the default run keeps
DEFAULT_RUN and the other families are marked `slow` (`pytest -m slow`), as the project does for
its other heavy variants.
"""
import numpy as np
import pytest
import tf_keras as keras

import kerasnets
from kerasnets.pipelines import convert, data, quantize
from conftest import CHAIN_HEAVY_VARIANTS, int8_outputs

SHAPE = (32, 32, 3)  # every family's minimum allows it; small keeps the default run short
CLASSES = 10
MIN_TOP1_AGREEMENT = 0.99
MAX_MEDIAN_LOGIT_ERROR = 0.03  # of the QAT model's logit range
TIE_STEPS = 2  # QAT top-2 margins within this many int8 output steps are ties
EVAL_IMAGES = 200
MICRO_IMAGES = 8  # TFLite Micro runs an image ~10x slower than LiteRT; bit-exactness needs few


def _one_per_family():
    """The first variant of each family (by paper) that the default run's int8 chain also uses."""
    chosen = {}
    for name in kerasnets.list_models():
        family = kerasnets.model_info(name).paper
        if name not in CHAIN_HEAVY_VARIANTS and family not in chosen:
            chosen[family] = name
    return sorted(chosen.values())


MODELS = _one_per_family()

# Families whose converted QAT model does not (yet) meet (c), with the figures measured (this
# test's setting) and what is known of why. The one place the test reads them: each runs as an
# xfail, and its reason is printed with the run's summary.
KNOWN_GAPS: dict[str, str] = {
    "ghostnet_030": "top-1 88.5% up to ties (86.0% strict), median logit error 1.83% of the range. Layer by "
                    "layer (LiteRT tensors kept, against the QAT model's layer outputs) the median error "
                    "stays at 0-3 output steps everywhere, while single elements part by 10-30% of a "
                    "layer's range from block 3 on and grow block by block through a 0.3-width net: "
                    "no one layer departs",
    "hardnet39ds": "top-1 98.5% up to ties (97.5% strict), median logit error 1.96% of the range. Layer "
                   "by layer (40 images, LiteRT tensors kept, against the QAT model's layer outputs) every "
                   "layer's median error is 0 output steps, while the 99th percentile grows through the "
                   "depthwise convolutions, block by block: 1-3 steps in block 1, 5-8 in block 2, ~45 in "
                   "block 4 (every scale still ~12/255 after 8 steps from TFMOT's [-6, 6] start). No layer "
                   "departs, and each harmonic link keeps its own quantiser, so int8 rounds where the QAT "
                   "graph does",
    "mobilenet_v3_small_100": "top-1 71.0% up to ties (69.5% strict), median logit error 3.51% of the range "
                              "with TFMOT's [-6, 6] start of every range: each tensor then has ~20 levels "
                              "and one-step differences flip the pick; started from 64 calibration "
                              "images (`quantize_model(calibration=)`) the same model reaches 99.0% up "
                              "to ties and 0.78%. The hard-sigmoid gates match layer by layer since the "
                              "gate's inner tensor is fake-quantised over [0, 6]",
    "shufflenetv2_050_cifar": "top-1 98.5% up to ties (98.0% strict), median logit error 0.82% of the range. "
                              "Layer by layer (as for hardnet39ds) every unit's concatenation has a median "
                              "error of 0-1 output steps and a 99th percentile that grows ~2 steps per unit, "
                              "1 in stage 2 to 25 at the last unit: accumulated rounding, no layer departs",
}


# The default run keeps the conversion paths this test fixed or guards (DenseNet's average pool,
# the condensed layers of CondenseNet and EffCNet, MGIC's grouped convs) and the reference; every
# other family runs under `-m slow`: each model costs 1-4 minutes of QAT wrapping, tracing and
# conversion whatever the image counts, and the whole list would add ~15 minutes to the default run.
DEFAULT_RUN = ("resnet8", "densenet40_k12_cifar", "condensenet50_cifar", "effcnet_cifar", "mgic_resnet20_cifar")


def _slow(name):
    return name not in DEFAULT_RUN


def _marks(name):
    marks = [pytest.mark.slow] if _slow(name) else []
    if name in KNOWN_GAPS:
        marks.append(pytest.mark.xfail(reason=KNOWN_GAPS[name], strict=False))
    return marks


def _params():
    return [pytest.param(n, marks=_marks(n)) for n in MODELS]


@pytest.fixture(scope="module")
def digits():
    train = data.digits_images(SHAPE, 256, seed=1)
    test = data.digits_images(SHAPE, EVAL_IMAGES, seed=2)[0]
    return train, test


def _trained_qat(name, train):
    keras.utils.set_random_seed(0)  # same weights, same batches: a figure in KNOWN_GAPS is reproducible
    model = kerasnets.create_model(name, input_shape=SHAPE, classes=CLASSES, classifier_activation="linear")
    convert.calibrate_batchnorm(model, train[0][:32])  # fresh statistics: int8 scales stay informative
    qat = quantize.quantize_model(model)
    qat.compile(keras.optimizers.SGD(0.02, momentum=0.9),
                keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    qat.fit(*train, batch_size=32, epochs=1, verbose=0)
    return qat


def qat_int8_agreement(qat, tflite, images):
    """(top-1 agreement, top-1 agreement up to ties, median |logit error| / logit range) of an int8
    .tflite against the QAT model it was converted from (LiteRT reference kernels, dequantised
    outputs). A tie: the int8 pick's QAT logit is within TIE_STEPS output steps of the QAT top-1
    logit, which rounding alone can swap."""
    expected = qat.predict(images, verbose=0, batch_size=50)
    interpreter = convert.litert_interpreter(tflite, reference=True)
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    got = convert.dequantize_output(convert.run_litert(tflite, convert.quantize_input(images, inp),
                                                       reference=True), out)
    same = got.argmax(-1) == expected.argmax(-1)
    picked = np.take_along_axis(expected, got.argmax(-1)[:, None], -1)[:, 0]
    tie = expected.max(-1) - picked <= TIE_STEPS * out["quantization"][0]
    error = float(np.median(np.abs(got - expected)) / (expected.max() - expected.min()))
    return float(np.mean(same)), float(np.mean(same | tie)), error


def _assert_micro_equals_reference(qat, summary, reference, micro, images):
    """TFLite Micro == LiteRT reference kernels, with the one difference test_zoo's int8 chain allows:
    their FULLY_CONNECTED requantisation rounds once (LiteRT) or twice (TFLite Micro), so a near-tie
    output may differ by 1 LSB; the network without its Dense head must then match bit for bit."""
    diff = np.abs(reference.astype(int) - micro)
    if not diff.any():
        return
    assert "FULLY_CONNECTED" in summary["ops"] and diff.max() == 1 and diff.mean() < 0.02, \
        f"TFLite Micro differs from LiteRT reference by up to {diff.max()} LSB"
    head = qat.layers[-1]
    assert isinstance(getattr(head, "layer", head), keras.layers.Dense), f"{head.name} is not the Dense head"
    features = keras.Model(qat.input, head.input)  # the QAT graph up to the head, its ranges included
    _, _, _, ref_features, micro_features = int8_outputs(features, images)
    np.testing.assert_array_equal(micro_features, ref_features, err_msg="ops before the Dense head differ")


@pytest.mark.parametrize("name", _params())
def test_qat_model_converts_to_the_int8_model_it_trained(name, digits):
    train, test = digits
    qat = _trained_qat(name, train)
    input_range = next(layer for layer in qat.layers if type(layer).__name__ == "QuantizeLayer").weights
    assert input_range[0].numpy() != -6.0, "training did not move the quantiser ranges"

    # (a) and (b): int8_outputs checks the ranks and returns both interpreters' outputs
    tflite, summary, _, reference, micro = int8_outputs(qat, test[:MICRO_IMAGES])
    assert convert.is_qat(qat)
    # every figure is measured before any check fails, so a known gap's entry can state them all
    raw, agreement, error = qat_int8_agreement(qat, tflite, test)
    figures = (f"top-1 agreement {agreement:.1%} up to ties ({raw:.1%} strict), "
               f"median logit error {error:.2%} of the logit range")
    print(f"{name}: QAT -> int8 {figures}; TFLite Micro != LiteRT reference on "
          f"{int(np.sum(micro != reference))}/{micro.size} outputs")
    _assert_micro_equals_reference(qat, summary, reference, micro, test[:MICRO_IMAGES])
    assert agreement >= MIN_TOP1_AGREEMENT and error <= MAX_MEDIAN_LOGIT_ERROR, \
        f"{name}: the int8 model departs from its QAT model: {figures}"
