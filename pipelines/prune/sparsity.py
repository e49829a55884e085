"""Weight sparsity with TFMOT (`tfmot.sparsity.keras`): unstructured magnitude pruning, m:n
(2:4) semi-structured pruning, pruning for XNNPACK's sparse inference, and the figures that show
the result (zero fractions, gzip-compressed .tflite size).

The usual flow: `prune_magnitude` wraps a trained model; train it with `callbacks()` (for example
through `pipelines.train.fit`, whose `build_model` returns the wrapped model); `strip` removes the
wrappers and leaves plain layers holding the sparse kernels, ready for QAT or export.
"""
from __future__ import annotations

import gzip
import logging
import os

import numpy as np
import tensorflow as tf
import tensorflow_model_optimization as tfmot
import tf_keras as keras
# TFMOT's own tables of which weights of which built-in layers it prunes (pinned TFMOT 0.8.1).
from tensorflow_model_optimization.python.core.sparsity.keras.prune_registry import PruneRegistry
from tensorflow_model_optimization.python.core.sparsity.keras.pruning_wrapper import PruneLowMagnitude

from kerasnets.pipelines.prune.functional import is_functional

_S = tfmot.sparsity.keras
log = logging.getLogger("kerasnets.prune")

SCHEDULES = ("constant", "polynomial")

# XNNPACK runs a 1x1 convolution sparse only when at least 2/3 of its weights are zero.
XNNPACK_MIN_SPARSITY = 2 / 3

_XNNPACK_LAYOUT = (
    "XNNPACK sparse inference needs a float NHWC model that starts with ZeroPadding2D(1) + a 3x3 "
    "stride-2 'valid' Conv2D on 3 input channels, ends its convolutional part at "
    "GlobalAveragePooling2D(keepdims=True), and in between holds only 1x1 stride-1 Conv2D, 3x3/5x5 "
    "DepthwiseConv2D (stride 1 'same', or 'valid' after a symmetric ZeroPadding2D), "
    "BatchNormalization, ReLU/ReLU6, Add, Multiply and Dropout. MobileNetV1/V2-style models fit "
    "once their stride-2 'same' convolutions are rebuilt with explicit padding: "
    "sparsity.explicit_padding(model)")


# ---------------------------------------------------------------------------------------------
# checks


def _check_model(model, what: str) -> None:
    if not isinstance(model, keras.Model):
        raise ValueError(f"{what} needs a tf_keras Model, got {type(model).__name__}")
    if not is_functional(model):
        raise ValueError(f"{what} needs a functional (or Sequential) tf_keras model with known inputs; "
                         f"{model.name!r} is a subclassed model: build it with keras.Model(inputs, outputs)")


def copy_model(model: keras.Model) -> keras.Model:
    """An independent copy of a functional model (new layers, same weights), so that wrapping it
    never changes the caller's model (TFMOT's wrappers would otherwise share its layers)."""
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def wrap_copy(model: keras.Model, wrap) -> keras.Model:
    """Clone `model` once: every layer re-created from its config, passed as `wrap(fresh, original)`
    (which returns `fresh` or a wrapper around it), its weights copied from `original` after the
    rebuild — unless `wrap` built `fresh` and set them itself (a wrapper that reads the weights
    when it is built). `model` itself is left untouched (TFMOT's wrappers would otherwise share
    its layers)."""
    pairs = []

    def clone(layer):
        if isinstance(layer, keras.Model):
            return keras.models.clone_model(copy_model(layer), clone_function=lambda l: wrap(l, l))
        fresh = layer.__class__.from_config(layer.get_config())
        wrapped = wrap(fresh, layer)
        if not fresh.built:
            pairs.append((layer, fresh))
        return wrapped

    rebuilt = keras.models.clone_model(model, clone_function=clone)
    for original, fresh in pairs:
        fresh.set_weights(original.get_weights())
    return rebuilt


def _check_sparsity(value, name="sparsity") -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be a fraction of zero weights in [0, 1) (0.5 zeroes half the "
                         f"weights), got {value!r}")
    return float(value)


def check_m_by_n(value) -> tuple[int, int]:
    """(m, n) as a tuple of ints with 0 < m < n: m zeros in every n consecutive weights."""
    try:
        m, n = value
    except (TypeError, ValueError):
        raise ValueError(f"sparsity_m_by_n must be a pair (m, n) such as (2, 4): m zeros in every n "
                         f"consecutive weights; got {value!r}") from None
    if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in (m, n)) \
            or not 0 < m < n:
        raise ValueError(f"sparsity_m_by_n must be two integers with 0 < m < n, such as (2, 4) (two "
                         f"zeros in every four weights); got {value!r}")
    return int(m), int(n)


# ---------------------------------------------------------------------------------------------
# which weights TFMOT prunes


def prunable_weights(layer, holder=None) -> list:
    """The variables TFMOT prunes in `layer`: the kernels of built-in Conv/Dense layers (exact
    classes of its registry; DepthwiseConv2D kernels are never pruned), or those a `PrunableLayer`
    declares. Empty for every other layer, including the zoo's custom layers. `holder`: the
    wrapper around `layer`, if any (a QAT wrapper keeps the kernel variable itself)."""
    if isinstance(layer, _S.PrunableLayer):
        return list(layer.get_prunable_weights())
    paths = PruneRegistry._LAYERS_WEIGHTS_MAP.get(type(layer), [])
    return [w for w in (weight_variable(layer, path, holder) for path in paths) if w is not None]


def weight_variable(layer, path: str, holder=None):
    """The variable behind `layer.<path>` ("kernel", "_query_dense.kernel"). Inside a QAT wrapper
    (`holder`) the attribute holds the fake-quantised tensor instead and the wrapper owns the
    variable, so it is found by name."""
    *owners, attr = path.split(".")
    for part in owners:
        layer = getattr(layer, part, None)
    value = getattr(layer, attr, None)
    if value is None or isinstance(value, tf.Variable):
        return value
    wanted = f"{layer.name}/{attr}:0"
    named = [w for w in (holder or layer).weights if w.name == wanted]
    return named[0] if len(named) == 1 else None


def _inner(layer):
    """The layer a TFMOT wrapper (pruning, quantisation, clustering) holds, else the layer."""
    while isinstance(layer, keras.layers.Wrapper) and hasattr(layer, "layer"):
        layer = layer.layer
    return layer


def _flat_layers(model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _flat_layers(layer)
        else:
            yield layer


def _kernels(model):
    """(layer name, effective kernel as numpy) for every weight TFMOT prunes; inside a pruning
    wrapper the kernel times its current mask (what `strip` leaves behind)."""
    for layer in _flat_layers(model):
        masks = {}
        if isinstance(layer, PruneLowMagnitude) and layer.built:
            masks = {id(weight): mask for weight, mask, _ in layer.pruning_vars}
        for weight in prunable_weights(_inner(layer), layer):
            value = np.asarray(weight.numpy())
            if id(weight) in masks:
                value = value * masks[id(weight)].numpy()
            yield layer.name, value


# ---------------------------------------------------------------------------------------------
# pruning


def _schedule(sparsity, schedule, begin_step, end_step, frequency, initial_sparsity):
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    if not isinstance(begin_step, (int, np.integer)) or begin_step < 0:
        raise ValueError(f"begin_step must be an integer >= 0, got {begin_step!r}")
    if not isinstance(frequency, (int, np.integer)) or frequency < 1:
        raise ValueError(f"frequency must be an integer >= 1 (optimiser steps between mask updates), "
                         f"got {frequency!r}")
    if schedule == "constant":
        end = -1 if end_step is None else int(end_step)
        if end != -1 and end <= begin_step:
            raise ValueError(f"end_step must be after begin_step={begin_step} (or None: prune to the end "
                             f"of training), got {end_step!r}")
        return _S.ConstantSparsity(sparsity, int(begin_step), end, int(frequency))
    if end_step is None or int(end_step) <= begin_step:
        raise ValueError(f"the polynomial schedule ramps sparsity from initial_sparsity at begin_step to "
                         f"sparsity at end_step: end_step must be an integer > begin_step={begin_step}, "
                         f"got {end_step!r} (e.g. steps per epoch x pruning epochs)")
    initial = _check_sparsity(initial_sparsity, "initial_sparsity")
    if initial > sparsity:
        raise ValueError(f"initial_sparsity ({initial}) must not exceed the final sparsity ({sparsity})")
    return _S.PolynomialDecay(initial, sparsity, int(begin_step), int(end_step), frequency=int(frequency))


def prune_magnitude(model: keras.Model, *, sparsity: float | None = None, schedule: str = "constant",
                    begin_step: int = 0, end_step: int | None = None, frequency: int = 100,
                    initial_sparsity: float = 0.0, sparsity_m_by_n=None,
                    exclude=()) -> keras.Model:
    """`model` with TFMOT's low-magnitude pruning wrapper on every layer whose kernel it can prune.

    sparsity: fraction of zeros each pruned kernel reaches (default 0.5), in [0, 1).
    schedule: "constant" (ConstantSparsity: `sparsity` from `begin_step` on) or "polynomial"
      (PolynomialDecay from `initial_sparsity` at `begin_step` to `sparsity` at `end_step`).
    frequency: optimiser steps between mask updates.
    sparsity_m_by_n: e.g. (2, 4) — 2 zeros in every 4 consecutive input-channel weights of each
      Conv2D/Dense kernel (in TFLite's layout), instead of unstructured sparsity; the sparsity is
      then m/n and the schedule only sets when the pattern is applied.
    exclude: names of layers to keep dense (often the first conv and the classifier).

    Layers TFMOT cannot wrap stay as they are: the zoo's custom layers, DepthwiseConv2D (TFMOT never
    prunes depthwise kernels), BatchNorm, activations, pooling. The result is built on a copy of
    `model` (same weights), so `model` itself stays dense. Train it with `callbacks()` (call this
    inside a distribution strategy's scope, e.g. in `train.fit`'s `build_model`); `strip` it after.
    """
    _check_model(model, "prune_magnitude")
    m_by_n = None if sparsity_m_by_n is None else check_m_by_n(sparsity_m_by_n)
    if m_by_n is not None:
        fixed = m_by_n[0] / m_by_n[1]
        if sparsity is not None and abs(float(sparsity) - fixed) > 1e-9:
            raise ValueError(f"sparsity_m_by_n={m_by_n} fixes the sparsity at {fixed:g}; drop "
                             f"sparsity={sparsity!r} or pass sparsity={fixed:g}")
        sparsity = fixed
    sparsity = _check_sparsity(0.5 if sparsity is None else sparsity)
    pruning_schedule = _schedule(sparsity, schedule, begin_step, end_step, frequency, initial_sparsity)
    names = {layer.name for layer in _flat_layers(model)}
    unknown = sorted(set(exclude) - names)
    if unknown:
        raise ValueError(f"exclude names layers {unknown} that {model.name!r} does not have")

    params = {"pruning_schedule": pruning_schedule}
    if m_by_n is not None:
        params["sparsity_m_by_n"] = m_by_n
    wrapped = []

    def wrap(fresh, original):
        weights = prunable_weights(original)
        if not weights or original.name in exclude:
            return fresh
        if m_by_n is not None and any(w.shape.rank not in (2, 4) for w in weights):
            return fresh  # TFMOT's m:n masks are defined for Conv2D and Dense kernels only
        wrapped.append(original.name)
        return _S.prune_low_magnitude(fresh, **params)

    pruned = wrap_copy(model, wrap)
    if not wrapped:
        raise ValueError(f"{model.name!r} has no layer whose weights TFMOT prunes (Conv2D, Dense, "
                         f"SeparableConv2D ... kernels){' outside exclude' if exclude else ''}")
    log.info("pruning %d layers of %s to sparsity %g", len(wrapped), model.name, sparsity)
    return pruned


def prune_for_xnnpack(model: keras.Model, *, sparsity: float = 0.75, schedule: str = "constant",
                      begin_step: int = 0, end_step: int | None = None, frequency: int = 100,
                      initial_sparsity: float = 0.0) -> keras.Model:
    """Prune only the 1x1 convolutions, with TFMOT's `PruneForLatencyOnXNNPack` policy, so that the
    stripped model's float .tflite, converted with `tf.lite.Optimize.EXPERIMENTAL_SPARSITY` (sparse
    weights behind DENSIFY ops), runs on XNNPACK's sparse kernels (Fast Sparse ConvNets); see
    benchmarks/xnnpack_sparse.py.

    The policy first checks the model's layout (see `_XNNPACK_LAYOUT`; `explicit_padding` fixes the
    zoo's MobileNetV1/V2) and a ValueError names what does not fit. XNNPACK uses its sparse kernels
    only when at least 2/3 of the 1x1 weights are zero, hence the default sparsity of 0.75, and only
    on ARM and on x86 without AVX (it keeps AVX CPUs on its dense kernels).
    """
    _check_model(model, "prune_for_xnnpack")
    sparsity = _check_sparsity(sparsity)
    if sparsity < XNNPACK_MIN_SPARSITY:
        log.warning("sparsity %.2f < 2/3: XNNPACK keeps dense kernels below 2/3 zeros in the 1x1 "
                    "convolutions, so this model will not run faster", sparsity)
    pruning_schedule = _schedule(sparsity, schedule, begin_step, end_step, frequency, initial_sparsity)
    policy = _S.PruneForLatencyOnXNNPack()
    try:
        policy.ensure_model_supports_pruning(model)
    except ValueError as error:
        raise ValueError(f"{model.name!r} does not fit XNNPACK sparse inference: {error}. "
                         f"{_XNNPACK_LAYOUT}") from None
    return _S.prune_low_magnitude(copy_model(model), pruning_schedule=pruning_schedule,
                                  pruning_policy=policy)


def explicit_padding(model: keras.Model) -> keras.Model:
    """A copy of `model` whose strided 'same' Conv2D/DepthwiseConv2D (odd kernel k, no dilation)
    become ZeroPadding2D(k // 2) + the same layer with 'valid' padding — the layout XNNPACK's
    sparse (NCHW) path and `PruneForLatencyOnXNNPack` accept. Shapes, weights and cost are the
    same, but TensorFlow's 'same' pads stride-2 inputs asymmetrically (0 before, 1 after on even
    sizes) while this pads symmetrically, so outputs differ: fine-tune a trained model after it."""
    _check_model(model, "explicit_padding")
    config = model.get_config()
    layers, changed = [], 0
    for entry in config["layers"]:
        cfg = entry["config"]
        strided = entry["class_name"] in ("Conv2D", "DepthwiseConv2D") and \
            cfg.get("padding") == "same" and tuple(cfg.get("strides", (1, 1))) != (1, 1)
        kernel = tuple(cfg.get("kernel_size", (1, 1)))
        if strided and all(k % 2 for k in kernel) and tuple(cfg.get("dilation_rate", (1, 1))) == (1, 1):
            pad_name = f"{entry['name']}_pad"
            layers.append({"class_name": "ZeroPadding2D", "name": pad_name,
                           "config": {"name": pad_name, "trainable": cfg.get("trainable", True),
                                      "dtype": cfg.get("dtype", "float32"),
                                      "padding": ((kernel[0] // 2,) * 2, (kernel[1] // 2,) * 2),
                                      "data_format": "channels_last"},
                           "inbound_nodes": entry["inbound_nodes"]})
            entry = {**entry, "config": {**cfg, "padding": "valid"},
                     "inbound_nodes": [[[pad_name, 0, 0, {}]]]}
            changed += 1
        layers.append(entry)
    if not changed:
        return keras.models.clone_model(model)
    rebuilt = keras.Model.from_config({**config, "layers": layers},
                                      custom_objects=keras.saving.get_custom_objects())
    for layer in model.layers:
        if layer.weights:
            rebuilt.get_layer(layer.name).set_weights(layer.get_weights())
    return rebuilt


def callbacks(log_dir: str | None = None) -> list:
    """Keras callbacks a pruning run needs: UpdatePruningStep (required: it advances the pruning
    step and re-applies the masks), plus PruningSummaries (per-layer sparsity in TensorBoard)
    when `log_dir` is given."""
    found = [_S.UpdatePruningStep()]
    if log_dir:
        found.append(_S.PruningSummaries(log_dir=str(log_dir)))
    return found


def strip(model: keras.Model) -> keras.Model:
    """The model without pruning wrappers: plain layers holding the masked (sparse) kernels, ready
    for QAT, clustering or export."""
    _check_model(model, "strip")
    return _S.strip_pruning(model)


# ---------------------------------------------------------------------------------------------
# figures


def sparsity_report(model: keras.Model) -> dict:
    """Fraction of zero weights in each kernel TFMOT prunes (see `prunable_weights`) and over
    all of them: {"layers": {name: fraction}, "overall": fraction, "weights": n, "zeros": n}.
    Works on wrapped (the kernel times its mask), stripped and QAT models."""
    _check_model(model, "sparsity_report")
    per_layer, zeros, total = {}, 0, 0
    for name, kernel in _kernels(model):
        z = int(np.count_nonzero(kernel == 0))
        per_layer[name] = z / kernel.size
        zeros += z
        total += kernel.size
    if not total:
        raise ValueError(f"{model.name!r} has no kernel TFMOT prunes (Conv2D, Dense ...) to report on")
    return {"layers": per_layer, "overall": zeros / total, "weights": int(total), "zeros": int(zeros)}


def compressed_size(tflite: bytes) -> int:
    """Bytes of the gzip-compressed .tflite (level 9): zeros are stored densely in a .tflite, so the
    compressed size is where sparsity shows (TFMOT's standard measure of pruning's size benefit)."""
    if not isinstance(tflite, (bytes, bytearray, memoryview)) or not len(tflite):
        raise ValueError(f"compressed_size needs the .tflite bytes (non-empty), got {type(tflite).__name__}")
    return len(gzip.compress(bytes(tflite), compresslevel=9, mtime=0))


def _m_by_n_ok(kernel: np.ndarray, m: int, n: int) -> bool:
    """At least m zeros in every n consecutive input-channel weights, in TFLite's layout
    ([out, h, w, in] for Conv2D, [out, in] for Dense); a short last group is padded with zeros,
    as TFMOT pads it when it builds the mask."""
    rows = kernel.T if kernel.ndim == 2 else np.transpose(kernel, (3, 0, 1, 2)).reshape(-1, kernel.shape[2])
    pad = (-rows.shape[1]) % n
    groups = np.pad(rows != 0, ((0, 0), (0, pad))).reshape(rows.shape[0], -1, n)
    return bool((groups.sum(-1) <= n - m).all())


def verify_m_by_n(model: keras.Model, m: int = 2, n: int = 4, *, per_layer: bool = False):
    """True if every Conv2D/Dense kernel TFMOT prunes holds m zeros in each n consecutive input
    channel weights (TFLite's layout, as `sparsity_m_by_n` prunes); `per_layer=True` returns
    {layer name: bool} instead. Layers listed in `exclude` when pruning will show as False."""
    _check_model(model, "verify_m_by_n")
    m, n = check_m_by_n((m, n))
    result = {name: _m_by_n_ok(kernel, m, n) for name, kernel in _kernels(model) if kernel.ndim in (2, 4)}
    if not result:
        raise ValueError(f"{model.name!r} has no Conv2D/Dense kernel to check")
    return result if per_layer else all(result.values())


def apply(model, request, context):
    """The registered entry of `magnitude` and `m_by_n` (see `criteria`): magnitude pruning to
    the request's ratio (2:4 for m_by_n) while fine-tuning `max(epochs, 1)` epochs, stripped."""
    from kerasnets.pipelines import train

    config = context.config or {}
    epochs = max(request.epochs, 1)
    steps = epochs * max(context.data.num_train // int(config.get("batch_size", 64)), 1)
    options = {"sparsity_m_by_n": (2, 4)} if request.method == "m_by_n" else {}
    # masks update every `frequency` steps: often enough that short fine-tunes reach the target
    wrapped = prune_magnitude(model, sparsity=request.ratio, end_step=steps,
                              frequency=max(1, min(100, steps // 10)), **options)
    run = train.fit(lambda: wrapped, context.data, os.path.join(context.out_dir, "sparsity"),
                    config={**config, "epochs": epochs}, verbose=0, extra_callbacks=callbacks())
    return strip(run["model"]), request.ratio
