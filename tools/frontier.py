"""The tiny-model frontier (`kerasnets frontier`): candidates fitted to a reference model's int8
size and TFLite Micro arena, ranked cheaply, trained with one recipe and measured as deployed.

Flow: `budget(reference)` measures the reference's int8 .tflite bytes and arena; `screen` builds
every candidate of `search_space()` and rejects with the profiler (params) and then the measured
arena and int8 size before any training; `rank` trains the survivors a few epochs on a subset
and scores them on held-out images; `train_row` trains one model with the full recipe and
measures fp32, post-training int8 and converted-QAT int8 top-1 on the whole test split, the
int8 size, the arena and the host latency. `run_frontier` composes them and appends each finished
row to the CSV at once, so an interrupted run keeps what it finished and a re-run skips it.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import time
from typing import Callable

import numpy as np

log = logging.getLogger("kerasnets.frontier")

REFERENCE = "resnet8"
COLUMNS = ["model", "variant", "params", "macs", "int8_kb", "arena_bytes", "latency_ms", "top1_fp32",
           "top1_int8", "top1_qat_int8", "epochs", "recipe", "seconds", "device", "command"]
SCREEN_COLUMNS = ["model", "variant", "params", "macs", "int8_kb", "arena_bytes", "verdict", "device"]
RANK_COLUMNS = ["model", "variant", "params", "int8_kb", "arena_bytes", "rank_top1", "rank_epochs",
                "rank_images", "seconds", "device"]

# Training recipes (pipelines.train options). "baseline" is the 30-epoch run the README quoted
# before; "fast" adds the fast-training options; DEFAULT_RECIPE is the ablation's winner
# (results/recipe.csv: at 10 epochs fast in float32 77.2%, fast in bf16 76.3%, baseline 75.6%).
RECIPES = {
    "baseline": {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4,
                 "schedule": "cosine", "warmup_epochs": 0, "label_smoothing": 0.0, "ema": 0.0,
                 "batch_size": 128, "augment": ["crop", "flip"], "mixed_precision": "float32"},
}
RECIPES["fast"] = {**RECIPES["baseline"], "lr": 0.1, "schedule": "linear", "warmup_epochs": 2,
                   "label_smoothing": 0.2, "ema": 0.999, "mixed_precision": "native"}
# bfloat16 is not faster everywhere: on an AVX512_BF16 CPU it trained ResNet-8 1.4x faster than
# float32 but the 8-channel ResNet-14 2x slower (thin convs), so the recipe also comes in float32
RECIPES["fast_fp32"] = {**RECIPES["fast"], "mixed_precision": "float32"}
DEFAULT_RECIPE = "fast_fp32"
QAT_EPOCHS = 2
QAT_LR = 0.002
CALIBRATION_IMAGES = 200


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One point of the search: a family, the knobs that make it, and how to build it."""

    family: str
    variant: str  # the knobs, e.g. "depth=14,width=0.75,ghost"
    build: Callable  # build(input_shape, classes) -> tf_keras Model
    resolution: int = 32

    @property
    def label(self) -> str:
        return f"{self.family}[{self.variant}]"


# ---------------------------------------------------------------------------------------------
# the search space: each family's knobs (width, depth, resolution)


def _registered(name, resolution=None):
    from kerasnets import create_model, model_info

    size = resolution or model_info(name).input_shape[0]
    return Candidate(name, f"res={size}", lambda shape, classes: create_model(name, input_shape=shape,
                                                                              classes=classes), size)


def _resnet(depth, width, ghost):
    from kerasnets import resnet

    variant = f"depth={depth},width={width}" + (",ghost" if ghost else "")
    family = "ghost_resnet_cifar" if ghost else "resnet_cifar"
    return Candidate(family, variant, lambda shape, classes: resnet.cifar_resnet(
        depth, width=width, ghost=ghost, input_shape=shape, classes=classes))


def _resnet_stages(widths, blocks):
    from kerasnets import resnet

    variant = f"widths={'-'.join(map(str, widths))},blocks={'-'.join(map(str, blocks))}"
    return Candidate("resnet_cifar", variant, lambda shape, classes: resnet.cifar_resnet(
        stage_widths=widths, stage_blocks=blocks, input_shape=shape, classes=classes))


def _mobilenet_v2(width, expansion, stem_stride, last_channels=0):
    from kerasnets import mobilenet

    variant = f"width={width},t={expansion},stem_stride={stem_stride}" + (f",last={last_channels}" if last_channels else "")
    return Candidate("mobilenet_v2_cifar", variant, lambda shape, classes: mobilenet.mobilenet_v2_cifar(
        width=width, expansion=expansion, stem_stride=stem_stride, last_channels=last_channels,
        input_shape=shape, classes=classes))


def _shufflenet_v2(width, repeats, last_channels):
    from kerasnets import shufflenetv2

    variant = f"width={width},repeats={'-'.join(map(str, repeats))},last={last_channels}"
    return Candidate("shufflenetv2_cifar", variant, lambda shape, classes: shufflenetv2.shufflenetv2_cifar(
        width=width, repeats=repeats, last_channels=last_channels, input_shape=shape, classes=classes))


def _densenet_bc(depth, growth, resolution):
    from kerasnets import densenet

    variant = f"depth={depth},growth={growth}" + (f",res={resolution}" if resolution != 32 else "")
    return Candidate("densenet_bc_cifar", variant, lambda shape, classes: densenet.densenet_cifar(
        depth=depth, growth=growth, input_shape=shape, classes=classes), resolution)


def search_space_reference() -> list[Candidate]:
    """The reference alone, as a candidate (what every frontier row is compared with)."""
    return [_registered(REFERENCE)]


def search_space() -> list[Candidate]:
    """CIFAR ResNets and Ghost-ResNets over depth x width, and CIFAR ResNets shaped stage by stage
    (widths x blocks per stage); MobileNetV2 inverted residuals over
    width x expansion x stem stride; CIFAR ShuffleNetV2 over width x units per stage x last conv
    width (the paper's 0.5x has 0.36M parameters, 0.2M of them in its 1024-channel last conv);
    CIFAR DenseNet-BC over depth x growth rate x resolution (32, 24: its concatenations hold
    every layer's maps at full resolution); every registered CIFAR-sized model
    (ShuffleNetV2/AugShuffleNet, DenseNet, CondenseNet/EffCNet, MGIC, ResNet) at 32x32 and at
    24x24 (lower resolution shrinks the arena); the ImageNet-layout efficient families at 32x32."""
    from kerasnets import list_models, model_info, resnet

    # models registered from this search: at their own resolution they are points of it already
    found_here = {row.name for row in resnet.FRONTIER_VARIANTS}
    space = [_resnet(depth, width, ghost) for ghost in (False, True) for depth in (8, 14, 20, 26)
             for width in (0.5, 0.625, 0.75, 0.875, 1.0, 1.25)]
    # stage by stage: parameters moved from the 8x8 stage into more blocks at 16x16 and 32x32,
    # where each one does more work (more MACs for the same flash)
    space += [_resnet_stages(widths, blocks)
              for widths in ((10, 32, 48), (12, 32, 48), (14, 32, 48), (14, 28, 40), (14, 28, 56), (12, 24, 56))
              for blocks in ((1, 2, 1), (2, 2, 1), (1, 3, 1))]
    space += [_mobilenet_v2(width, expansion, stride) for stride in (2, 1) for expansion in (3, 6)
              for width in (0.5, 0.75, 1.0)]
    space += [_shufflenet_v2(width, repeats, last) for width in (0.25, 0.3125, 0.375)
              for repeats in ((4, 8, 4), (2, 4, 2)) for last in (128, 256)]
    space += [_densenet_bc(depth, growth, size) for size in (32, 24) for growth in (4, 6, 8)
              for depth in (22, 28, 40)]
    for name in list_models():
        if name == REFERENCE:
            continue
        native = model_info(name).input_shape[0]
        sizes = (32, 24) if native == 32 else (32,)
        space += [_registered(name, size) for size in sizes
                  if size >= model_info(name).min_size and not (name in found_here and size == native)]
    return space


# ---------------------------------------------------------------------------------------------
# measuring a model as deployed


def deployment(model, calibration: np.ndarray, *, calibrate_bn: bool = False) -> dict:
    """int8 .tflite bytes (+ the model) and TFLite Micro arena of a Keras model; an untrained model
    gets BatchNorm statistics from the calibration images first (`calibrate_bn`)."""
    from kerasnets import profile
    from kerasnets.micro import arena
    from kerasnets.pipelines import convert

    if calibrate_bn:
        convert.calibrate_batchnorm(model, calibration)
    tflite = convert.to_int8(model, calibration)
    stats = profile(model)
    try:
        arena_bytes = arena.measure_arena_in_child(tflite)
    except RuntimeError as error:  # TFLite Micro cannot run it
        log.info("no arena for %s: %s", model.name, error)
        arena_bytes = None
    return {"tflite": tflite, "params": stats["params"], "macs": stats["macs"],
            "int8_bytes": len(tflite), "arena_bytes": arena_bytes}


def budget(calibration: np.ndarray, reference: str = REFERENCE) -> dict:
    """The reference's own int8 size and arena (untrained, BatchNorm-calibrated: neither depends
    on the trained values), measured in this run."""
    from kerasnets import create_model

    model = create_model(reference, input_shape=calibration.shape[1:], classes=10)
    measured = deployment(model, calibration, calibrate_bn=True)
    return {"int8_bytes": measured["int8_bytes"], "arena_bytes": measured["arena_bytes"],
            "params": measured["params"]}


def _resized(images: np.ndarray, size: int) -> np.ndarray:
    import tensorflow as tf

    if images.shape[1] == size:
        return images
    return tf.image.resize(images, (size, size), antialias=True).numpy()


def screen(candidates, limit: dict, calibration: np.ndarray, *, classes: int = 10) -> list[dict]:
    """Each candidate's params, MACs, int8 size and arena with a verdict: "fits" or why not.
    The profiler rejects first (params alone over the int8 budget); only the rest are converted."""
    from kerasnets import profile

    rows = []
    for candidate in candidates:
        row = {"model": candidate.family, "variant": candidate.variant}
        try:
            images = _resized(calibration, candidate.resolution)
            model = candidate.build(images.shape[1:], classes)
        except ValueError as error:  # the knobs do not make a valid model
            rows.append({**row, "verdict": f"invalid: {error}"})
            continue
        stats = profile(model)
        row.update(params=stats["params"], macs=stats["macs"])
        if stats["params"] > limit["int8_bytes"]:  # int8 weights alone exceed the file budget
            rows.append({**row, "verdict": "params over the int8 budget (profiler)"})
            continue
        measured = deployment(model, images[:32], calibrate_bn=True)
        row.update(int8_kb=round(measured["int8_bytes"] / 1024, 1), arena_bytes=measured["arena_bytes"])
        if measured["arena_bytes"] is None:
            verdict = "TFLite Micro cannot run it"
        elif measured["int8_bytes"] > limit["int8_bytes"]:
            verdict = "int8 size over budget"
        elif measured["arena_bytes"] > limit["arena_bytes"]:
            verdict = "arena over budget"
        else:
            verdict = "fits"
        rows.append({**row, "verdict": verdict})
        log.info("screen %s: %s", candidate.label, verdict)
    return rows


# ---------------------------------------------------------------------------------------------
# training and measuring


def _not_in(rows: list[dict], candidates) -> list:
    """The candidates that have no row (by model and variant) in `rows`."""
    listed = {(r["model"], r["variant"]) for r in rows}
    return [c for c in candidates if (c.family, c.variant) not in listed]


def screen_table(candidates, path: str, limit: dict, calibration: np.ndarray, *, device: str = "") -> list[dict]:
    """The screen rows of `candidates` kept in the CSV at `path`: the candidates it lacks (all on a
    first run, the new ones when the search space has grown) are screened and appended, naming the
    `device` that measured them; the rows already there are not measured again."""
    from kerasnets.tools import bench

    rows = read_rows(path)
    missing = _not_in(rows, candidates)
    new_rows = [{**row, "device": device} for row in screen(missing, limit, calibration)]
    bench.append_rows(new_rows, path, SCREEN_COLUMNS)
    return rows + new_rows


def _at_resolution(data, size: int):
    """The data set resized to size x size (the candidate's input resolution)."""
    import tensorflow as tf

    if data.image_shape[0] == size:
        return data

    def resize(x, y):
        return tf.image.resize(x, (size, size), antialias=True), y

    return dataclasses.replace(data, train=data.train.map(resize).cache(), test=data.test.map(resize).cache(),
                               image_shape=(size, size, data.image_shape[2]))


def evaluate_flip_tta(model, data, batch_size: int = 500) -> float:
    """Top-1 with test-time flip augmentation (mean of the image's and its mirror's outputs):
    reported apart, as it doubles the cost of an inference on the device."""
    import tensorflow as tf

    correct = total = 0
    for x, y in data.test.batch(batch_size):
        both = model.predict_on_batch(x) + model.predict_on_batch(tf.reverse(x, axis=[2]))
        correct += int(np.sum(np.argmax(both, -1) == y.numpy()))
        total += int(len(y))
    return correct / max(total, 1)


def int8_top1(tflite: bytes, data) -> float:
    from kerasnets.pipelines import convert

    return convert.tflite_accuracy(tflite, data.test.as_numpy_iterator())


TRAINED = "trained.keras"  # a row's finished float training, kept before anything is measured


def trained_model(build, data, folder: str, config: dict, *, verbose: int = 2, extra_callbacks=()):
    """(model, precision) of the float training in `folder` with `config`: taken from its
    `trained.keras` when an earlier run finished it, else trained, an interrupted run of the same
    config continuing from its last finished epoch (`train.fit(resume=True)`; the weight average
    restarts from the restored weights), and kept before anything is measured. A 30-epoch row on
    2 cores can outlive the process that started it."""
    import json

    from kerasnets.pipelines import saving, train

    config = json.loads(json.dumps(config))  # as it reads back from the file
    path, state_path = os.path.join(folder, TRAINED), os.path.join(folder, "trained.json")
    state = {}
    if os.path.exists(state_path):
        with open(state_path, encoding="utf-8") as f:
            state = json.load(f)
    same = state.get("config") == config
    if same and state.get("precision") and os.path.exists(path):
        log.info("%s: trained already", folder)
        return saving.load_keras(path), state["precision"]
    os.makedirs(folder, exist_ok=True)
    clock = _TrainingClock(state_path, config, state.get("seconds", 0.0) if same else 0.0)
    clock.save()
    result = train.fit(build, data, folder, config=config, resume=same, verbose=verbose,
                       extra_callbacks=[*extra_callbacks, clock.callback()])
    train.write_model(result["model"], path)
    clock.save(precision=result["precision"])
    return result["model"], result["precision"]


def training_seconds(folder: str) -> float | None:
    """Seconds the float training in `folder` took, summed over the runs that made it (a resumed
    run adds its own to those of the killed one, up to that one's last finished epoch); None for
    a folder trained before this was recorded."""
    import json

    try:
        with open(os.path.join(folder, "trained.json"), encoding="utf-8") as f:
            return json.load(f).get("seconds")
    except FileNotFoundError:
        return None


class _TrainingClock:
    """Writes the training's seconds so far into its state file at every finished epoch: a killed
    run leaves what it spent up to its last checkpoint for the run that resumes it."""

    def __init__(self, state_path: str, config: dict, seconds_before: float):
        self.state_path, self.config, self.before = state_path, config, float(seconds_before)
        self.started = time.time()

    def seconds(self) -> float:
        return self.before + time.time() - self.started

    def save(self, **extra) -> None:
        import json

        with open(self.state_path, "w", encoding="utf-8") as f:
            json.dump({"config": self.config, "seconds": self.seconds(), **extra}, f)

    def callback(self):
        import tf_keras as keras

        return keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: self.save())


def _seconds_trained(folder: str, started: float) -> float:
    """The float training in `folder` over every run that made it (`training_seconds`), or, for a
    folder trained before that was recorded, this run's time since `started`."""
    spent = training_seconds(folder)
    return time.time() - started if spent is None else spent


def train_row(candidate: Candidate, data, out_dir: str, *, recipe: str = DEFAULT_RECIPE, epochs: int = 30,
              qat_epochs: int = QAT_EPOCHS, overrides: dict | None = None, verbose: int = 2) -> dict:
    """Train one candidate with `recipe` for `epochs`, then measure it as deployed: fp32 top-1,
    post-training int8 top-1, QAT (`qat_epochs` at a low rate, float32) converted to int8 and its
    top-1, all on the whole test split; int8 size and arena of the deployed (QAT) model; host
    int8 latency (LiteRT, 1 thread, median). `overrides` change recipe options (ablations).
    `seconds`: the float training over every run that made it (`training_seconds`), then this
    run's QAT and measurements."""
    from kerasnets.pipelines import data as data_mod, quantize, train
    from kerasnets.tools import bench

    start = time.time()
    data = _at_resolution(data, candidate.resolution)
    classes = len(data.classes)
    shape = data.image_shape
    config = {**RECIPES[recipe], **(overrides or {}), "epochs": int(epochs)}
    model, precision = trained_model(lambda: candidate.build(shape, classes), data, os.path.join(out_dir, "train"),
                                     config, verbose=verbose)
    trained, measuring = _seconds_trained(os.path.join(out_dir, "train"), start), time.time()
    calibration = data_mod.representative_images(data, CALIBRATION_IMAGES)
    row = {"model": candidate.family, "variant": candidate.variant, "epochs": epochs, "recipe": recipe,
           "precision": precision, "top1_fp32": round(train.evaluate(model, data), 4),
           "top1_fp32_flip_tta": round(evaluate_flip_tta(model, data), 4)}
    ptq = deployment(model, calibration)
    row["top1_int8"] = round(int8_top1(ptq["tflite"], data), 4)
    if qat_epochs:
        qat_config = {**config, "epochs": int(qat_epochs), "lr": QAT_LR, "warmup_epochs": 0, "ema": 0.0,
                      "mixed_precision": "float32"}
        qat = train.fit(lambda: quantize.quantize_model(model, calibration=calibration), data,
                        os.path.join(out_dir, "qat"), config=qat_config, verbose=verbose)["model"]
        deployed = deployment(qat, calibration)
        row["top1_qat_int8"] = round(int8_top1(deployed["tflite"], data), 4)
    else:
        deployed = ptq
    with open(os.path.join(out_dir, "model_int8.tflite"), "wb") as f:
        f.write(deployed["tflite"])
    model.save(os.path.join(out_dir, "model.keras"))
    latency = bench.measure_in_child(deployed["tflite"], threads=1, runs=50, xnnpack=True)
    row.update(params=ptq["params"], macs=ptq["macs"], int8_kb=round(deployed["int8_bytes"] / 1024, 1),
               arena_bytes=deployed["arena_bytes"], latency_ms=round(latency["median"], 3),
               seconds=round(trained + time.time() - measuring))
    return row


def rank(candidates, data, out_dir: str, *, epochs: int = 4, train_images: int = 20000,
         test_images: int = 5000, recipe: str = DEFAULT_RECIPE, on_row=None) -> list[dict]:
    """Score each candidate cheaply: `epochs` of the recipe on the first `train_images` training
    images, top-1 (fp32) on the first `test_images` test images. Best first; `on_row(row)` is
    called as each finishes (so a caller can keep it at once)."""
    from kerasnets.pipelines import data as data_mod, train

    scored = []
    for candidate in candidates:
        start = time.time()
        subset = _at_resolution(data_mod.subset(data, train_images, test_images), candidate.resolution)
        shape, classes = subset.image_shape, len(subset.classes)
        config = {**RECIPES[recipe], "epochs": int(epochs)}
        folder = os.path.join(out_dir, "rank", candidate.label.replace("[", "_").replace("]", "").replace(",", "_"))
        result = train.fit(lambda: candidate.build(shape, classes), subset, folder, config=config, verbose=0)
        scored.append({"model": candidate.family, "variant": candidate.variant,
                       "rank_top1": round(train.evaluate(result["model"], subset), 4),
                       "rank_epochs": epochs, "rank_images": train_images,
                       "seconds": round(time.time() - start)})
        log.info("rank %s: %.4f", candidate.label, scored[-1]["rank_top1"])
        if on_row:
            on_row(scored[-1])
    return sorted(scored, key=lambda r: -r["rank_top1"])


# ---------------------------------------------------------------------------------------------
# tables


def read_rows(path: str) -> list[dict]:
    from kerasnets.tools.zoo import read_csv

    return read_csv(path)


def done(path: str, candidate: Candidate, epochs: int, recipe: str) -> bool:
    return any((r["model"], r["variant"], r["epochs"], r["recipe"]) ==
               (candidate.family, candidate.variant, str(epochs), recipe) for r in read_rows(path))


def find(candidates, label: str) -> Candidate:
    for candidate in candidates:
        if candidate.label == label:
            return candidate
    raise ValueError(f"no candidate {label!r} in the search space; e.g. "
                     f"{', '.join(c.label for c in candidates[:4])}")


def plot(rows: list[dict], path: str) -> None:
    """Pareto plots: QAT int8 top-1 against int8 KiB, arena and MACs, one marker per epochs, the
    reference's budget as dashed lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    axes_of = (("int8_kb", "int8 .tflite (KiB)"), ("arena_bytes", "TFLite Micro arena (B)"), ("macs", "MACs"))
    figure, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    for ax, (key, label) in zip(axes, axes_of):
        for r in rows:
            top1 = float(r["top1_qat_int8"] or r["top1_int8"]) * 100
            marker = "o" if str(r["epochs"]) == "30" else "s"
            color = "black" if r["model"] == REFERENCE else "tab:blue"
            ax.scatter(float(r[key]), top1, marker=marker, color=color)
            ax.annotate(f"{r['model']} {r['variant']} ({r['epochs']} ep)", (float(r[key]), top1), fontsize=7,
                        xytext=(4, 2), textcoords="offset points")
            if r["model"] == REFERENCE and key != "macs":
                ax.axvline(float(r[key]), linestyle="--", color="grey", linewidth=0.8)
        ax.set_xlabel(label)
        ax.set_ylabel("top-1 int8 (%)")
        ax.grid(alpha=0.3)
    figure.suptitle("CIFAR-10 (JPEG): int8 top-1 within ResNet-8's budget (dashed: its size and arena)")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


# ---------------------------------------------------------------------------------------------
# the whole search


def _command(argv) -> str:
    return " ".join(["kerasnets", "frontier", *argv])


def row_folder(candidate: Candidate, epochs: int, recipe: str = DEFAULT_RECIPE) -> str:
    """The folder name of a trained row inside the frontier's work folder; the recipe is part of
    it (unless it is the default) so that a run with another recipe never resumes this one's checkpoint."""
    name = f"{candidate.label}-{epochs}ep" + ("" if recipe == DEFAULT_RECIPE else f"-{recipe}")
    return name.replace("[", "_").replace("]", "").replace(",", "_").replace("=", "")


def compressed_variant(method: str, pre_epochs: int) -> str:
    """The variant column of a registered model pruned into the budget."""
    return f"{method}-pruned to budget after {pre_epochs} ep"


def fit_to_budget(model, limit: dict, calibration: np.ndarray, method: str = "l1"):
    """(pruned model, ratio): the least `method` pruning of a trained `model` whose converted int8
    file and TFLite Micro arena, both measured (not the profiler's estimates), fit `limit`."""
    from kerasnets.pipelines import prune

    target = prune.Target((("int8_kb", limit["int8_bytes"] / 1024), ("peak_ram", limit["arena_bytes"])))

    def measured(candidate):
        deployed = deployment(candidate, calibration)
        arena_bytes = deployed["arena_bytes"] if deployed["arena_bytes"] is not None else float("inf")
        return {"int8_kb": deployed["int8_bytes"] / 1024, "peak_ram": arena_bytes}

    return prune.prune_to_target(model, lambda ratio: prune.compress(model, method, ratio=ratio)[0], target,
                                 measured=measured, steps=7)


def compressed_row(name: str, data, out_dir: str, *, limit: dict, recipe: str = DEFAULT_RECIPE, epochs: int = 30,
                   pre_epochs: int = 10, method: str = "l1", qat_epochs: int = QAT_EPOCHS,
                   overrides: dict | None = None, verbose: int = 2) -> dict:
    """A larger registered model brought into the budget: `pre_epochs` of the recipe, `method`
    pruning to the budget (measured: `fit_to_budget`), then the remaining epochs fine-tuning the
    surviving weights, QAT and every measurement of `train_row`. `seconds` covers all of it;
    `pruned` (not a CSV column) holds the ratio and the post-training int8 bytes and arena the
    pruning met."""
    from kerasnets.pipelines import data as data_mod

    start = time.time()
    big = _registered(name)
    sized = _at_resolution(data, big.resolution)
    config = {**RECIPES[recipe], **(overrides or {}), "epochs": int(pre_epochs)}
    trained, _ = trained_model(lambda: big.build(sized.image_shape, len(sized.classes)), sized,
                               os.path.join(out_dir, "pretrain"), config, verbose=verbose)
    pretraining, pretrained = _seconds_trained(os.path.join(out_dir, "pretrain"), start), time.time()
    calibration = data_mod.representative_images(sized, CALIBRATION_IMAGES)
    pruned, ratio = fit_to_budget(trained, limit, calibration, method)
    log.info("%s pruned by %s at ratio %.3f to fit the budget", name, method, ratio)
    met = deployment(pruned, calibration)
    weights = pruned.get_weights()

    def build(shape, classes):  # the pruned architecture with its surviving trained weights
        import tf_keras as keras

        model = keras.models.clone_model(pruned)
        model.set_weights(weights)
        return model

    candidate = Candidate(name, compressed_variant(method, pre_epochs), build, big.resolution)
    pruning = time.time() - pretrained
    row = train_row(candidate, data, out_dir, recipe=recipe, epochs=epochs - pre_epochs, qat_epochs=qat_epochs,
                    overrides=overrides, verbose=verbose)
    return {**row, "epochs": epochs, "seconds": round(pretraining + pruning + row["seconds"]),
            "pruned": {"ratio": round(ratio, 4), "int8_bytes": met["int8_bytes"], "arena_bytes": met["arena_bytes"]}}


def distilled_recipe(recipe: str, teacher: str, teacher_epochs: int | None = None) -> str:
    """The recipe column of a row distilled from `teacher` (trained `teacher_epochs` when they
    differ from the row's own epochs: None)."""
    return f"{recipe}+kd({teacher}" + (f", {teacher_epochs} ep)" if teacher_epochs else ")")


def train_teacher(name: str, data, work: str, *, out: str, recipe: str, epochs: int, device: str,
                  command: str, progress=print) -> str:
    """The .keras file of registered model `name` trained with `recipe` for `epochs` (no QAT: only
    its logits are used), trained now unless `work` has it; its row goes to `out` like any other
    (a teacher need not fit the budget: the row shows its accuracy and training seconds)."""
    candidate = _registered(name)
    folder = os.path.join(work, row_folder(candidate, epochs, recipe))
    path = os.path.join(folder, "model.keras")
    if not os.path.exists(path):
        from kerasnets.tools import bench

        row = {**train_row(candidate, data, folder, recipe=recipe, epochs=epochs, qat_epochs=0),
               "device": device, "command": command}
        bench.append_rows([row], out, COLUMNS)
        progress(f"teacher {name}: fp32 {row['top1_fp32']:.2%} in {row['seconds']} s")
    return path


def run_frontier(data, *, out: str, work: str, epochs: int = 30, recipe: str = DEFAULT_RECIPE, top: int = 2,
                 rank_epochs: int = 4, rank_images: int = 20000, candidates=None, reference: bool = True,
                 teacher: str | None = None, teacher_epochs: int | None = None, compressed=(),
                 pre_epochs: int = 10, device: str = "", space=None,
                 command: str = "kerasnets frontier", progress=print) -> list[dict]:
    """Budget -> screen -> rank -> train the reference (unless `reference` is False) and the `top`
    ranked candidates (or the labels in `candidates`) for `epochs`; every finished row is appended to `out` at once, and
    the screen and rank tables (`<out>-screen.csv`, `<out>-rank.csv` beside it) are kept in `work`
    so that a re-run picks up where it stopped. With `teacher` (a registered model name) that
    model is trained first with the same recipe for `teacher_epochs` (default `epochs`: fewer keep
    its training within the reference's wall-clock), and every row is distilled from it (recipe
    column `<recipe>+kd(<teacher>)`, or `<recipe>+kd(<teacher>, N ep)`). Each registered model
    named in `compressed` trains `pre_epochs`, is pruned into the measured budget and fine-tuned
    for the rest (`compressed_row`). `space` (default `search_space()`) is the list of candidates
    searched; a screen table lacking some of them screens those first."""
    from kerasnets.pipelines import data as data_mod
    from kerasnets.tools import bench

    if recipe not in RECIPES:
        raise ValueError(f"`recipe` must be one of {', '.join(RECIPES)}, got {recipe!r}")
    if compressed and not 0 < pre_epochs < epochs:
        raise ValueError(f"`pre_epochs` ({pre_epochs}) must leave epochs to fine-tune the pruned model: "
                         f"between 1 and `epochs` - 1 ({epochs - 1})")
    from kerasnets import model_info

    for name in compressed:
        model_info(name)  # an unknown name fails before any training
    os.makedirs(work, exist_ok=True)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    calibration = data_mod.representative_images(data, CALIBRATION_IMAGES)
    space = search_space() if space is None else space
    stem = out[:-len(".csv")] if out.endswith(".csv") else out
    screen_path, rank_path = f"{stem}-screen.csv", f"{stem}-rank.csv"
    limit = budget(calibration)
    progress(f"budget ({REFERENCE}, measured): int8 {limit['int8_bytes']} B, arena {limit['arena_bytes']} B")
    if candidates:
        chosen = [find(space, label) for label in candidates]
    else:
        screened = screen_table(space, screen_path, limit, calibration, device=device)
        fits = [c for c in space if any((r["model"], r["variant"], r["verdict"]) == (c.family, c.variant, "fits")
                                        for r in screened)]
        progress(f"screen: {len(fits)} of {len(space)} candidates fit the budget")
        ranked = read_rows(rank_path)
        # the reference is ranked with them: a candidate is worth its full training only if it
        # outranks the model it must beat
        reference_candidate = _registered(REFERENCE)
        missing = _not_in(ranked, [reference_candidate] + fits)
        sizes = {(r["model"], r["variant"]): r for r in screened}
        sizes[(reference_candidate.family, reference_candidate.variant)] = {
            "params": limit["params"], "int8_kb": round(limit["int8_bytes"] / 1024, 1),
            "arena_bytes": limit["arena_bytes"]}

        def keep(row):
            size = sizes[(row["model"], row["variant"])]
            bench.append_rows([{**row, **{k: size[k] for k in ("params", "int8_kb", "arena_bytes")},
                                "device": device}], rank_path, RANK_COLUMNS)

        rank(missing, data, work, epochs=rank_epochs, train_images=rank_images, recipe=recipe, on_row=keep)
        ranked = sorted((r for r in read_rows(rank_path) if r["model"] != REFERENCE),
                        key=lambda r: -float(r["rank_top1"]))
        chosen = [find(space, f"{r['model']}[{r['variant']}]") for r in ranked[:top]]
    rows, overrides, label = [], {}, recipe
    suffix = ""
    if teacher:
        teacher_epochs = teacher_epochs or epochs
        overrides["teacher"] = train_teacher(teacher, data, work, out=out, recipe=recipe, epochs=teacher_epochs,
                                             device=device, command=command, progress=progress)
        label = distilled_recipe(recipe, teacher, teacher_epochs if teacher_epochs != epochs else None)
        suffix = f"-kd-{teacher}" + (f"-{teacher_epochs}ep" if teacher_epochs != epochs else "")
    for candidate in [_registered(REFERENCE)] * reference + chosen:
        if done(out, candidate, epochs, label):
            progress(f"{candidate.label}: {epochs} epochs already in {out}")
            continue
        folder = os.path.join(work, row_folder(candidate, epochs, recipe) + suffix)
        row = {**train_row(candidate, data, folder, recipe=recipe, epochs=epochs, overrides=overrides),
               "recipe": label, "device": device, "command": command}
        _finished(row, rows, out, stem, progress)
    for name in compressed:
        candidate = Candidate(name, compressed_variant("l1", pre_epochs), None)
        if done(out, candidate, epochs, label):
            progress(f"{candidate.label}: {epochs} epochs already in {out}")
            continue
        folder = os.path.join(work, row_folder(candidate, epochs, recipe).replace(" ", "_") + suffix)
        row = {**compressed_row(name, data, folder, limit=limit, recipe=recipe, epochs=epochs,
                                pre_epochs=pre_epochs, overrides=overrides),
               "recipe": label, "device": device, "command": command}
        _finished(row, rows, out, stem, progress)
    return rows


def _finished(row: dict, rows: list, out: str, stem: str, progress) -> None:
    """Keep a trained row at once: appended to `out`, the plot redrawn, a line printed."""
    from kerasnets.tools import bench

    bench.append_rows([row], out, COLUMNS)
    rows.append(row)
    progress(f"{row['model']}[{row['variant']}]: fp32 {row['top1_fp32']:.2%}, int8 {row['top1_int8']:.2%}, "
             f"QAT int8 {row.get('top1_qat_int8', 0):.2%}, {row['int8_kb']} KiB, arena {row['arena_bytes']} B")
    plot(read_rows(out), f"{stem}.png")


# ---------------------------------------------------------------------------------------------
# shipping a trained row: package weights and a TFLite Micro bundle


def ship(row: dict, folder: str, name: str, data, *, bundle_root: str = os.path.join("results", "bundles")) -> dict:
    """Ship the model trained in `folder` (a `train_row` folder) as registered model `name`: its
    fp32 weights into the package (`create_model(name, weights="cifar10")`) with the row's
    accuracy, and its deployed int8 model as a TFLite Micro bundle (arrays, resolver, settings,
    golden pairs from real test images) in `bundle_root/<name>-cifar10/`."""
    import tf_keras as keras

    from kerasnets import create_model, weights
    from kerasnets.micro import codegen
    from kerasnets.pipelines import convert

    trained = keras.models.load_model(os.path.join(folder, "model.keras"), compile=False)
    model = create_model(name, input_shape=trained.input_shape[1:], classes=trained.output_shape[-1])
    model.set_weights(trained.get_weights())  # same builder and knobs: the same weights in order
    metrics = {k: row[k] for k in ("top1_fp32", "top1_int8", "top1_qat_int8", "epochs", "recipe", "command")
               if k in row}
    weights.save(model, name, "cifar10", metrics={**metrics, "dataset": "CIFAR-10 (JPEG)", "device": row.get("device", "")})
    with open(os.path.join(folder, "model_int8.tflite"), "rb") as f:
        tflite = f.read()
    images, labels = map(np.stack, zip(*data.test.take(64).as_numpy_iterator()))
    # golden pairs from images the deployed model classifies right: a port's check then also
    # shows the expected class on the board
    _, predicted = convert.tflite_predictions(tflite, zip(images, labels))
    images, labels = images[predicted == labels], labels[predicted == labels]
    details = convert.litert_interpreter(tflite).get_input_details()[0]
    bundle = os.path.join(bundle_root, f"{name}-cifar10")
    report = codegen.emit(tflite, bundle, name, labels=data.classes, firmware=False,
                          golden_inputs=convert.quantize_input(images, details))
    with open(os.path.join(bundle, f"{name}.tflite"), "wb") as f:
        f.write(tflite)
    # the golden pairs as arrays too, with the true class of each image, for checks from Python
    golden = np.asarray(report["golden_inputs"])
    quantized = convert.quantize_input(images, details).reshape(len(images), -1)
    chosen = [int(np.flatnonzero((quantized == g.reshape(1, -1)).all(axis=1))[0]) for g in golden]
    np.savez(os.path.join(bundle, "golden.npz"), inputs=golden, outputs=np.asarray(report["golden_outputs"]),
             labels=labels[chosen])
    return report
