"""QAT all the way to int8 for one variant of every family: the converted QAT model is the model
that was trained (what a user who trains with QAT deploys).

Each model is trained on digits for 20 epochs (`_fit`), so that it tells them apart (checked:
>= 20% top-1, five or more classes picked; untrained, most nets picked one class for every image,
and agreement with them proved nothing) with the confidence of a net a user deploys (90-97% on the
held-out digits: with 5 epochs, 30-90%, the top two logits of many images were within rounding of
each other, and agreement measured those ties more than the conversion). It is then wrapped by
`quantize.quantize_model` with its ranges started from calibration images (as `kerasnets run`
starts them), trained for a few steps at a low rate (so the quantiser ranges move; `_trained_qat`
says why low), converted to full-integer int8, and then:
(a) TFLite Micro gives the same int8 outputs as LiteRT's reference kernels, bit for bit (up to
    the 1-LSB rounding difference test_zoo's int8 chain allows, where it starts:
    `conftest.assert_micro_matches_reference`);
(b) no tensor is above 4-D (CMSIS-NN's limit);
(c) the int8 model reproduces the QAT Keras model it came from on 200 real images: top-1
    agreement >= 99%, or >= the agreement of LiteRT's own two int8 kernel sets with each other
    where that is lower (`kernel_agreement`), an image whose int8 pick is within two output steps
    of the QAT model's top logit counting as agreeing (a tie that rounding decides), and median
    |logit error| <= 3% of the QAT model's logit range (a linear head, so that a softmax cannot
    hide an error).
A family in KNOWN_GAPS is expected to fail (c) only, after (a) and (b) hold: its xfail takes
`RoundingCompounds` alone, so any other failure fails the test.

Why those bounds: a faithful conversion differs from the fake-quant graph only by rounding (a
product rounded once in int8 where float rounds it later, BatchNorm folded into the weights), so
its logits stay within a few output steps, ~1% of the range (resnet8: median 0 steps). A real
mismatch (a missing BatchNorm, a quantiser that the converter places elsewhere) moves the logits
by 10-30% of the range. Where a net's top two logits are within a couple of int8 output steps,
rounding alone decides the strict top-1 (augshufflenet_050_cifar trained 5 epochs: 95% strict,
97.5% counting one-step ties, at a median error of 0.5% of the range). Each of the two logits
carries about one step of rounding (the output's own plus what the layers before accumulate), so
a margin under two steps is a tie; the strict figure is printed beside it. 99% allows two other
disagreements in 200. An int8 model is itself defined only up to its kernels' rounding: LiteRT's
reference kernels requantise through a fixed-point multiplier, XNNPACK (its default CPU path, and
Android's) through float, so a value near a half step rounds apart, and a net that amplifies
one-step differences (channel shuffles, 3x3 depthwise convs summing 9 inputs) has the two kernel
sets of one .tflite pick different classes on a few images (shufflenetv2_050_cifar: 7 of 200,
median logit difference 1.2% of the range, as far as its int8 model is from its QAT model). The
conversion cannot be asked to follow the QAT model more closely than int8 inference follows
itself, so where the two kernel sets agree on fewer than 99% of the images, their agreement is the
bound. A real mismatch stays far below either (those this test was written against: 59-88% agreement,
median errors of 8-27% of the range).

Run time: each model costs a fixed 1-8 minutes (under load) of QAT wrapping, graph tracing and
conversion, and its float training 1-4 minutes more for most families (320 steps; grouped convs train group
by group, without which CondenseNet-50's float training took 5.5 times as long).
So the default run keeps DEFAULT_RUN and the other families are marked `slow` (`pytest -m slow`),
as the project does for its other heavy variants.
"""
import numpy as np
import pytest
import tf_keras as keras

import kerasnets
from kerasnets.pipelines import convert, data, quantize, train as training
from conftest import assert_micro_matches_reference, int8_outputs, one_per_family

SHAPE = (32, 32, 3)  # every family's minimum allows it; small keeps the default run short
CLASSES = 10
MIN_TOP1_AGREEMENT = 0.99
MAX_MEDIAN_LOGIT_ERROR = 0.03  # of the QAT model's logit range
TIE_STEPS = 2  # QAT top-2 margins within this many int8 output steps are ties
EVAL_IMAGES = 200
CALIBRATION_IMAGES = 64  # the QAT ranges start from these, as post-training quantisation sets them
QAT_LR = 1e-5  # `_trained_qat`
FIT_IMAGES, FIT_EPOCHS, FIT_LR = 512, 20, 1e-3  # the float model's training on digits (`_fit`)
MIN_QAT_TOP1 = 0.2  # on the 200 images, twice chance, with MIN_CLASSES_PICKED picked:
MIN_CLASSES_PICKED = 5  # the QAT model tells digits apart, so agreeing with it means something
MICRO_IMAGES = 8  # TFLite Micro runs an image ~10x slower than LiteRT; bit-exactness needs few


class RoundingCompounds(AssertionError):
    """The network-level bounds of (c) fail after (a) and (b) held. The one failure a KNOWN_GAPS
    entry expects."""


MODELS = one_per_family()

# Families whose converted QAT model does not (yet) meet (c), with the figures measured (this
# test's setting) and what is known of why. The one place the test reads them: each runs as an
# xfail, and its reason is printed with the run's summary. TensorFlow's CPU kernels (oneDNN) take
# other code paths with and without AVX-512, so the float training, and with it the QAT model and
# its close calls, differ between hosts: figures name the host, "AVX2" (x86 with AVX2 only) or
# "AVX-512" (with VNNI): QAT top-1; agreement up to ties (strict), median logit error. The test
# trains grouped convs group by group (as `pipelines.train.fit` does). "Trained 5 epochs": the float
# training this test had before (`_fit`). Under a flat 99% (before (c) took LiteRT's kernel-to-kernel
# agreement as its floor) augshufflenet_050_cifar, shufflenet_050_g4 and shufflenetv2_050_cifar were
# here too (AVX2: 98.5%, 98.0%, 97.5% up to ties), their kernel sets agreeing on 98.5%, 94.0%, 96.5%.
KNOWN_GAPS: dict[str, str] = {
    "effcnet_cifar": "AVX2: 96.0%; 98.5% (98.5%), 1.64%, one image short (LiteRT's two kernel sets agree with each "
                     "other on 99.0%, median logit difference 0.82%: its int8 model departs from its QAT model "
                     "twice as far; on an AVX-512 VNNI host it meets (c), an xpass: 96.0%; 99.0% (98.0%), 1.57%, "
                     "kernel sets agreeing on 99.0%; its BatchNorms frozen in QAT training, as before "
                     "`quantize.DepthwiseBatchNorm`: 95.0%; 98.0% (97.0%), 2.02%; trained 5 epochs, 70.5%; "
                     "95.0% (93.5%), 1.57%, AVX-512: 92.5% (89.0%), 1.96%). "
                     "Op by op (`convert.qat_op_fidelity`, every op matched by hand too) none departs: the "
                     "pre-activation BatchNorms (1x1 depthwise) round 1-2% of their outputs a step apart "
                     "(TFLite's requantisation rounds them through a grid of 1/8-1/64 step), the convolutions "
                     "0-0.7%, the exported "
                     "requantisations 0%; its MEAN exported as an exact depthwise convolution changes nothing. End "
                     "to end (`convert.qat_tensor_drift`, AVX2) the difference grows layer by layer: the "
                     "concatenations' 99th percentile from 1 step (block 1) to 13 (block 3), the pooled features "
                     "median 2 / max 83 steps, logits median 6 steps of a 187-step range; its BatchNorms map one "
                     "input step to 3.9 output steps (median), up to 82 (DenseNet-40's: 4.8, up to 27, whose "
                     "concatenations stay within a 99th percentile of 2 steps), and its 3x3 depthwise and grouped "
                     "1x1 convs sum few inputs, so a one-step rounding difference is amplified, not averaged",
}


# The default run keeps the conversion paths this test fixed or guards (the average pools of the
# dense nets' transitions, in CondenseNet-50 as in DenseNet-40; the condensed layers of CondenseNet
# and EffCNet, MGIC's grouped convs) and the reference; every
# other family runs under `-m slow`: each model costs 1-4 minutes of QAT wrapping, tracing and
# conversion whatever the image counts, and its training 1-4 more (densenet40_k12_cifar 10-15
# minutes in all, so it runs under `-m slow` since the float training grew to 20 epochs).
DEFAULT_RUN = ("resnet8", "condensenet50_cifar", "effcnet_cifar", "mgic_resnet20_cifar")


def _slow(name):
    return name not in DEFAULT_RUN


def _marks(name):
    marks = [pytest.mark.slow] if _slow(name) else []
    if name in KNOWN_GAPS:
        marks.append(pytest.mark.xfail(reason=KNOWN_GAPS[name], raises=RoundingCompounds, strict=False))
    return marks


def _params():
    return [pytest.param(n, marks=_marks(n)) for n in MODELS]


@pytest.fixture(scope="module")
def digits():
    train = data.digits_images(SHAPE, FIT_IMAGES, seed=1)
    test = data.digits_images(SHAPE, EVAL_IMAGES, seed=2)
    return train, test


def _trained_qat(name, train):
    keras.utils.set_random_seed(0)  # same weights, same batches: a figure in KNOWN_GAPS is reproducible
    model = kerasnets.create_model(name, input_shape=SHAPE, classes=CLASSES, classifier_activation="linear")
    convert.calibrate_batchnorm(model, train[0][:32])  # a start the training below moves from
    _fit(model, *train)
    qat = quantize.quantize_model(model, calibration=train[0][:CALIBRATION_IMAGES])  # as `kerasnets run` does
    # a small step: the ranges move by their EMA whatever the rate, the weights a little, so the test
    # measures the conversion rather than the fine-tuning. At `kerasnets run`'s 1e-4 this epoch moved
    # g_ghost_regnetx_032 from 90% to 84.5% and shufflenet_050_g4 from 89.5% to 86% (AVX2 host), as it
    # moves their float nets (90% -> 84%, 90.5% -> 89%): the fine-tuning of a net fitted to 512 images
    qat.compile(keras.optimizers.SGD(QAT_LR, momentum=0.9),
                keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    started = _activation_ranges(qat)
    with training.grouped_convolutions_by_groups():  # as `pipelines.train.fit` trains
        qat.fit(*train, batch_size=32, epochs=1, verbose=0)
    assert not np.allclose(_activation_ranges(qat), started), "training did not move the quantiser ranges"
    return qat


def _fit(model, images, labels):
    """Trains the float model on digits until it tells them apart (the guard in the test checks it).

    Agreement with a net that picks one class for every image holds whatever the conversion does,
    and a classifier fitted on random features leaves most families near chance; the BatchNorm
    gains of random features (up to ~20) also amplify any one-step rounding far beyond what a
    trained net sees. Adam reached 65-90% on 200 held-out digits in 5 epochs (mobilenet_v2_100 79%,
    shufflenetv2_050_cifar 64.5%, ghostnet_030 82.5%); at 20, 90-97% (mobilenet_v2_100 92.5%,
    shufflenetv2_050_cifar 92.5%, ghostnet_030 93.5%, condensenet50_cifar 93%, effcnet_cifar 96.5%,
    AVX2 host)."""
    model.compile(keras.optimizers.Adam(FIT_LR), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    # grouped convs group by group, as `pipelines.train.fit` runs them: the same sums, 5-15x faster
    # to train on a CPU (CondenseNet-50's test: 20 minutes -> 4)
    with training.grouped_convolutions_by_groups():
        model.fit(images, labels, batch_size=32, epochs=FIT_EPOCHS, verbose=0)


def _activation_ranges(qat):
    return np.array(list(quantize.activation_ranges(qat).values()))


def kernel_agreement(tflite, inputs, reference):
    """Top-1 agreement of LiteRT's default kernels (XNNPACK) on `inputs` with its reference
    kernels' outputs `reference` for the same int8 model: how far int8 inference agrees with itself."""
    return float(np.mean(reference.argmax(-1) == convert.predict_litert(tflite, inputs).argmax(-1)))


def qat_int8_agreement(tflite, got, expected):
    """(top-1 agreement, top-1 agreement up to ties, median |logit error| / logit range) of an int8
    .tflite whose outputs are `got` (LiteRT reference kernels, dequantised) against the QAT model
    it was converted from, whose logits on the same images are `expected`. A tie: the int8 pick's
    QAT logit is within TIE_STEPS output steps of the QAT top-1 logit, which rounding alone can swap.

    Both models get the same int8 input (`convert.qat_input`): the values the QAT model's input
    quantiser gives. Pixels normalised as (p - 127.5) / 127.5 sit exactly halfway between two int8
    input steps, where TensorFlow's fake quantisation and a NumPy rounding of the float image
    disagree by float error alone (ghost_resnet56_cifar on CIFAR-10: 15-30% of the pixels one step apart)."""
    out = convert.litert_interpreter(tflite).get_output_details()[0]
    same = got.argmax(-1) == expected.argmax(-1)
    picked = np.take_along_axis(expected, got.argmax(-1)[:, None], -1)[:, 0]
    tie = expected.max(-1) - picked <= TIE_STEPS * out["quantization"][0]
    error = float(np.median(np.abs(got - expected)) / (expected.max() - expected.min()))
    return float(np.mean(same)), float(np.mean(same | tie)), error


@pytest.mark.parametrize("name", _params())
def test_qat_model_converts_to_the_int8_model_it_trained(name, digits):
    train, (test, labels) = digits
    qat = _trained_qat(name, train)
    logits = qat.predict(test, verbose=0, batch_size=50)
    picks = logits.argmax(-1)
    top1, classes = float(np.mean(picks == labels)), len(np.unique(picks))
    assert top1 >= MIN_QAT_TOP1 and classes >= MIN_CLASSES_PICKED, \
        f"{name}: the QAT model scores {top1:.1%} picking {classes} classes, so agreeing with it proves little"

    # (a) and (b): int8_outputs checks the ranks and returns both interpreters' outputs; the
    # calibration images go to the converter as for any int8 export
    tflite, _, x8, reference, micro = int8_outputs(qat, test[:MICRO_IMAGES], calibration=train[0][:CALIBRATION_IMAGES])
    assert convert.is_qat(qat)
    # every figure is measured before any check fails, so a known gap's entry can state them all
    inputs = convert.qat_input(qat, test)
    got = convert.predict_litert(tflite, inputs, reference=True)  # run once, for both figures
    raw, agreement, error = qat_int8_agreement(tflite, got, logits)
    floor = kernel_agreement(tflite, inputs, got)
    figures = (f"top-1 agreement {agreement:.1%} up to ties ({raw:.1%} strict; LiteRT's kernel sets agree with "
               f"each other on {floor:.1%}), median logit error {error:.2%} of the logit range")
    print(f"{name}: QAT top-1 {top1:.1%}; QAT -> int8 {figures}; TFLite Micro != LiteRT reference on "
          f"{int(np.sum(micro != reference))}/{micro.size} outputs")
    assert_micro_matches_reference(tflite, x8, reference, micro)
    if not (agreement >= min(MIN_TOP1_AGREEMENT, floor) and error <= MAX_MEDIAN_LOGIT_ERROR):
        raise RoundingCompounds(f"{name}: the int8 model departs from its QAT model: {figures}")
