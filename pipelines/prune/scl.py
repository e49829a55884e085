"""Sparse Connectivity Learning (Tang et al., arXiv 2201.05020) at channel level: learned binary
channel masks that a connection-count penalty drives to zero, exported as a smaller model.

The paper writes every weight as w * m with m = step(s) a binary mask of a trainable score s,
trains s through an identity straight-through estimator (d step / d s := 1), normalises the
mask gradients per layer so layers of different scale learn at the same pace, and adds the
number of live connections to the loss. Here there is one score per prunable channel *read* by
a layer: `attach_masks` replaces every Conv2D (groups 1), SeparableConv2D and Dense that reads a
prunable channel (see `graph.analyse`) by a masked twin that multiplies its input channels by
step(score) — the same as w * m over the kernel's input rows, the connections the layer spends
on that channel.

Why the layers that read a channel, not the ones that make it: a channel switched off where it
is made is still shifted by the BatchNorm and biases after it, so removing it would change the
outputs; a channel no layer reads any more can be removed without changing a single output.
The rule `learned_channels` applies: a prunable channel goes when its mask is 0 in every layer
that reads it (a residual stream read by several convolutions goes only when all of them agree);
a channel that some readers switched off and others still read stays, and `export` zeroes the
kernel rows of the readers that switched it off, so the exported model computes exactly what
the masked model computed. Every channel set keeps at least its highest-scoring channel.
"""
from __future__ import annotations

import os

import numpy as np
import tensorflow as tf
import tf_keras as keras

from kerasnets.pipelines.prune import surgery
from kerasnets.pipelines.prune.functional import is_functional
from kerasnets.pipelines.prune.graph import ChannelGraph, analyse
from kerasnets.pipelines.prune.handlers import Unsupported, handler_for, register_handler

L = keras.layers
_PACKAGE = "kerasnets"
_EPS = 1e-8


def step_ste(score, *, normalise: bool = False):
    """Unit step (1 where score > 0, else 0) with the identity straight-through gradient; with
    `normalise=True` the gradient reaching `score` is divided by its root mean square (+1e-8),
    so every layer's scores move at the same pace whatever the scale of its gradients."""
    return (_step_normalised if normalise else _step)(tf.convert_to_tensor(score))


@tf.custom_gradient
def _step(score):
    return tf.cast(score > 0, score.dtype), lambda upstream: upstream


@tf.custom_gradient
def _step_normalised(score):
    def grad(upstream):
        rms = tf.sqrt(tf.reduce_mean(tf.square(upstream)))
        return upstream / (rms + tf.cast(_EPS, upstream.dtype))

    return tf.cast(score > 0, score.dtype), grad


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ConnectionCount(keras.regularizers.Regularizer):
    """strength * (live connections of one layer) / (connections all masked layers can switch off),
    called with the layer's mask: `connections[j]` weights depend on mask entry j. Summed over the
    layers it is strength x the fraction of maskable connections still alive, so one strength
    (about 0.1-1, in units of the task loss) means the same for a small and a large model."""

    def __init__(self, strength: float, connections, total: float):
        self.strength = float(strength)
        self.connections = [float(c) for c in connections]
        self.total = float(total)

    def __call__(self, mask):
        mask = tf.cast(mask, tf.float32)
        live = tf.reduce_sum(mask * tf.constant(self.connections, tf.float32))
        return (self.strength / self.total) * live

    def get_config(self):
        return {"strength": self.strength, "connections": self.connections, "total": self.total}


class _InputMask:
    """Mixin: gate the input channels by step(mask_score) before the layer's own call.

    `channel_index[i]` is the score that gates input channel i, or -1 for a fixed channel (mask
    1 always); several inputs may share a score (a Flatten repeats every channel per position).
    """

    def __init__(self, *args, channel_index, score_init=1.0, connection_count=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_mask(channel_index, score_init, connection_count)

    def build(self, input_shape):
        super().build(input_shape)
        self._build_mask(input_shape)

    def call(self, inputs):
        return super().call(self._gate(inputs))

    def get_config(self):
        return {**super().get_config(), **self._mask_config()}

    def _init_mask(self, channel_index, score_init, connection_count):
        index = np.asarray([int(i) for i in channel_index], np.int32)
        if index.ndim != 1 or not (index >= 0).any():
            raise ValueError(f"layer {self.name!r}: channel_index must list one score index (or "
                             f"-1) per input channel with at least one score, got {channel_index!r}")
        self._channel_index = index  # a numpy array: not tracked as a layer attribute
        self.score_init = float(score_init)
        if isinstance(connection_count, dict):
            connection_count = keras.saving.deserialize_keras_object(connection_count)
        self.connection_count = connection_count
        self._gather = tf.constant(np.maximum(index, 0))
        self._fixed = tf.constant(index < 0)

    @property
    def channel_index(self) -> list:
        return [int(i) for i in self._channel_index]

    def _build_mask(self, input_shape):
        if int(input_shape[-1]) != len(self.channel_index):
            raise ValueError(f"layer {self.name!r}: channel_index has {len(self.channel_index)} "
                             f"entries but the input has {input_shape[-1]} channels")
        self.mask_score = self.add_weight(
            "mask_score", shape=(max(self.channel_index) + 1,), dtype="float32",
            initializer=keras.initializers.Constant(self.score_init), trainable=True)

    def mask(self):
        """The layer's binary mask, one entry per score (a numpy array)."""
        return (self.mask_score.numpy() > 0).astype(np.float32)

    def input_mask(self):
        """Mask per input channel (fixed channels 1), a numpy array."""
        index = self._channel_index
        return np.where(index < 0, 1.0, self.mask()[np.maximum(index, 0)]).astype(np.float32)

    def _gate(self, inputs):
        mask = step_ste(tf.cast(self.mask_score, tf.float32), normalise=True)
        if self.connection_count is not None:
            self.add_loss(self.connection_count(mask))
        gate = tf.where(self._fixed, tf.ones_like(self._fixed, tf.float32),
                        tf.gather(mask, self._gather))
        return inputs * tf.cast(gate, inputs.dtype)

    def _mask_config(self):
        count = self.connection_count
        return {"channel_index": self.channel_index, "score_init": self.score_init,
                "connection_count": None if count is None else
                keras.saving.serialize_keras_object(count)}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class MaskedConv2D(_InputMask, L.Conv2D):
    """Conv2D whose input channels are gated by learned binary masks (see the module docstring)."""


@keras.saving.register_keras_serializable(package=_PACKAGE)
class MaskedSeparableConv2D(_InputMask, L.SeparableConv2D):
    """SeparableConv2D whose input channels are gated by learned binary masks."""


@keras.saving.register_keras_serializable(package=_PACKAGE)
class MaskedDense(_InputMask, L.Dense):
    """Dense whose input features are gated by learned binary masks."""


# The layers whose input channels a mask gates (the readers surgery narrows) and their twins.
_MASKED = {L.Conv2D: MaskedConv2D, L.SeparableConv2D: MaskedSeparableConv2D, L.Dense: MaskedDense}
for _twin in _MASKED.values():  # not its parent's handler: the mask score is one more weight
    register_handler(_twin, Unsupported("is an SCL masked layer; prune the model scl.export makes "
                                        "from it instead"))
del _twin


# ---------------------------------------------------------------------------------------------
# which layer reads which channel


def _check_functional(model, argument):
    if not is_functional(model):
        raise TypeError(f"{argument} must be a functional tf_keras Model (keras.Model(inputs, "
                        f"outputs)), got {type(model).__name__}")


def _check_strength(strength) -> float:
    try:
        value = float(strength)
    except (TypeError, ValueError):
        raise TypeError(f"strength must be a number >= 0, got {strength!r}") from None
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"strength must be a finite number >= 0, got {strength!r}")
    return value


def _is_maskable(layer) -> bool:
    return type(layer) in _MASKED and handler_for(layer).mixes_inputs(layer)


def readers(graph: ChannelGraph) -> dict:
    """{layer name: (channel_index, roots)} for every layer a mask can gate: `roots[j]` is the
    prunable channel that score j gates, `channel_index[i]` the score of input channel i (-1:
    fixed). Layers that read no prunable channel are left out."""
    prunable = set(graph.channels)
    result = {}
    for layer in graph.model.layers:
        if not _is_maskable(layer) or layer.name not in graph.layer_in:
            continue
        order: dict = {}
        index = []
        for root in graph.roots(graph.layer_in[layer.name]):
            root = int(root)
            index.append(order.setdefault(root, len(order)) if root in prunable else -1)
        if order:
            result[layer.name] = (index, list(order))
    return result


def _copy_weights(source, target):
    """Assign the weights of `source` to those of `target`, in order (the same layer class or its
    masked twin; a masked layer's mask_score is left out on either side)."""
    own = [w for w in target.weights if w is not getattr(target, "mask_score", None)]
    theirs = [w for w in source.weights if w is not getattr(source, "mask_score", None)]
    if len(own) != len(theirs):
        raise ValueError(f"layer {target.name!r}: {len(own)} weights, the source has {len(theirs)}")
    for mine, value in zip(own, theirs):
        mine.assign(value)


def attach_masks(model: keras.Model, graph: ChannelGraph | None = None, *, init: float = 1.0,
                 strength: float = 0.0) -> keras.Model:
    """A copy of `model` whose Conv2D / SeparableConv2D / Dense layers that read prunable channels
    are masked twins (MaskedConv2D, ...) with a trainable `mask_score` per channel read, all at
    `init` (> 0: every mask starts at 1, so the copy computes what `model` computes). With
    `strength` > 0 every masked layer adds its ConnectionCount penalty to the model's losses."""
    _check_functional(model, "model")
    strength = _check_strength(strength)
    init = float(init)
    if not init > 0:
        raise ValueError(f"init must be > 0 so that every mask starts at 1, got {init}")
    graph = analyse(model) if graph is None else graph
    missing = [name for name in graph.layer_in if name not in {l.name for l in model.layers}]
    if missing:
        raise ValueError(f"graph does not belong to this model (no layer {missing[0]!r}); "
                         "pass graph=analyse(model)")
    plan = readers(graph)
    if not plan:
        raise ValueError(f"model {model.name!r} has no Conv2D/SeparableConv2D/Dense layer that reads "
                         "a prunable channel: nothing to mask")
    counts = {}
    for name, (index, roots) in plan.items():
        layer = model.get_layer(name)
        per_input = handler_for(layer).connections_per_input(layer)
        index = np.asarray(index)
        counts[name] = [per_input * int(np.sum(index == j)) for j in range(len(roots))]
    total = float(sum(sum(c) for c in counts.values()))

    def clone(layer):
        if layer.name not in plan:
            return layer.__class__.from_config(layer.get_config())
        count = ConnectionCount(strength, counts[layer.name], total) if strength > 0 else None
        return _MASKED[type(layer)].from_config({
            **layer.get_config(), "channel_index": plan[layer.name][0], "score_init": init,
            "connection_count": count})

    masked = keras.models.clone_model(model, clone_function=clone)
    for layer in model.layers:
        if layer.weights:
            _copy_weights(layer, masked.get_layer(layer.name))
    return masked


def _masked_layers(masked_model, graph):
    """{name: masked layer} after checking the masked model against the graph of its original."""
    _check_functional(masked_model, "masked_model")
    plan = readers(graph)
    layers = {}
    for name, (index, _) in plan.items():
        try:
            layer = masked_model.get_layer(name)
        except ValueError:
            raise ValueError(f"masked_model has no layer {name!r}: it was not made by attach_masks "
                             "from the model this graph describes") from None
        if not isinstance(layer, _InputMask) or layer.channel_index != list(index):
            raise ValueError(f"layer {name!r} of masked_model does not carry the masks this graph "
                             "expects; pass the graph of the model given to attach_masks")
        layers[name] = layer
    return layers


def channel_scores(masked_model: keras.Model, graph: ChannelGraph) -> dict:
    """{prunable channel: (largest score over the layers reading it, any reader's mask is 1)}."""
    result: dict = {}
    plan = readers(graph)
    for name, layer in _masked_layers(masked_model, graph).items():
        scores = layer.mask_score.numpy()
        for j, root in enumerate(plan[name][1]):
            best, alive = result.get(root, (-np.inf, False))
            result[root] = (max(best, float(scores[j])), alive or bool(scores[j] > 0))
    return result


def learned_channels(masked_model: keras.Model, graph: ChannelGraph) -> list[int]:
    """Prunable channels (keys of graph.channels) whose mask is 0 in every layer that reads them;
    in a channel set with every channel off, the highest-scoring one stays; a grouped conv loses
    as many filters from each group as its sparsest-kept group has off."""
    scores = channel_scores(masked_model, graph)
    remove = []
    for channels in graph.channel_sets():
        read = [r for r in channels if r in scores]
        off = [r for r in read if not scores[r][1]]
        if off and len(off) == len(channels):
            off.remove(max(off, key=lambda r: scores[r][0]))
        remove += off
    return graph.balance(remove, rounding="down")


def export(masked_model: keras.Model, original_model: keras.Model, graph: ChannelGraph) -> keras.Model:
    """A plain model (the layers of `original_model`) with the trained weights of `masked_model`
    and the `learned_channels` removed; kept channels a reader switched off have that reader's
    kernel rows zeroed, so the result computes what the masked model computes."""
    _check_functional(original_model, "original_model")
    layers = _masked_layers(masked_model, graph)
    plain = keras.models.clone_model(original_model)
    for layer in plain.layers:
        if layer.weights:
            _copy_weights(masked_model.get_layer(layer.name), layer)
    for name, masked in layers.items():
        off = masked.input_mask() == 0
        if not off.any():
            continue
        target = plain.get_layer(name)
        weights = target.get_weights()
        # axis -2 of the Conv2D/Dense kernel and of the SeparableConv2D depthwise kernel: inputs
        weights[0][..., off, :] = 0.0
        target.set_weights(weights)
    return surgery.prune_channels(plain, learned_channels(masked_model, graph), graph=graph)


# ---------------------------------------------------------------------------------------------
# one call: mask, train, export


def recalibrate_batchnorm(model: keras.Model, batches) -> int:
    """Set every BatchNorm's moving mean and variance to the average of its batch statistics over
    `batches` (an iterable of image arrays or (images, labels) pairs); returns the batches used.
    Masks that changed late in training leave the moving statistics behind the batch ones."""
    norms = [layer for layer in model.layers if isinstance(layer, L.BatchNormalization)]
    saved = [layer.momentum for layer in norms]
    count = 0
    try:
        for batch in batches:
            images = batch[0] if isinstance(batch, (tuple, list)) else batch
            for layer in norms:
                layer.momentum = count / (count + 1)  # running mean of the batch statistics
            model(images, training=True)
            count += 1
    finally:
        for layer, momentum in zip(norms, saved):
            layer.momentum = momentum
    return count


def _save(model, path) -> str:
    tmp = path[:-len(".keras")] + ".tmp.keras"
    model.save(tmp)
    os.replace(tmp, path)
    return path


def train(model: keras.Model, data, out_dir: str, *, epochs: int, strength: float,
          config: dict | None = None, init: float = 1.0, recalibrate: int = 20, verbose: int = 1):
    """Train `model` with SCL channel masks on `data` (pipelines.data.ImageData) for `epochs`,
    re-estimate the BatchNorm statistics of the trained masked model on `recalibrate` training
    batches (0: keep them), then export the smaller model. Saves `out_dir/masked.keras` (the
    trained masked model, recalibrated, uncompiled) and `out_dir/pruned.keras`.

    Returns (pruned model, info): prunable channels and parameters before/after, the pruned
    model's test accuracy, the training history. `config` holds pipelines.train options (its
    `epochs` is replaced). A score moves by about the learning rate per step, so `init` / lr is
    roughly the number of steps before a mask can switch off."""
    from kerasnets.pipelines import train as train_mod

    _check_functional(model, "model")
    strength = _check_strength(strength)
    if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 1:
        raise ValueError(f"epochs must be an integer >= 1, got {epochs!r}")
    if isinstance(recalibrate, bool) or not isinstance(recalibrate, (int, np.integer)) or recalibrate < 0:
        raise ValueError(f"recalibrate must be an integer >= 0 (batches), got {recalibrate!r}")
    graph = analyse(model)
    options = {**(config or {}), "epochs": int(epochs)}
    result = train_mod.fit(lambda: attach_masks(model, graph, init=init, strength=strength),
                           data, out_dir, config=options, verbose=verbose)
    masked = result["model"]
    batch_size = int(options.get("batch_size", train_mod.DEFAULTS["batch_size"]))
    used = recalibrate_batchnorm(masked, data.train.batch(batch_size).take(int(recalibrate)))
    removed = learned_channels(masked, graph)
    pruned = export(masked, model, graph)
    plain_copy = keras.models.clone_model(masked)  # without the training run's optimizer
    plain_copy.set_weights(masked.get_weights())
    _save(plain_copy, os.path.join(out_dir, "masked.keras"))
    path = _save(pruned, os.path.join(out_dir, "pruned.keras"))
    info = {
        "channels_before": len(graph.channels), "channels_after": len(graph.channels) - len(removed),
        "channels_removed": len(removed),
        "params_before": int(model.count_params()), "params_after": int(pruned.count_params()),
        "accuracy": train_mod.evaluate(pruned, data), "strength": strength, "epochs": int(epochs),
        "recalibrated_batches": used, "history": result["history"], "model_path": path,
    }
    return pruned, info


def apply(model, request, context):
    """The registered entry (see `criteria`): `train` for `max(epochs, 1)` epochs at the
    context's strength (default 0.5); SCL learns its own amount, so no ratio is reported."""
    strength = 0.5 if context.strength is None else context.strength
    pruned, _ = train(model, context.data, context.out_dir, epochs=max(request.epochs, 1),
                      strength=strength, config=context.config, verbose=0)
    return pruned, None
