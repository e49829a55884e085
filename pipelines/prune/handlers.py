"""The table of layer handlers: everything the pruning engine knows about a layer type, in one place.

A handler tells the channel dependency analysis how a layer couples and propagates channel ids
(`propagate`), tells the surgery how to cut its weights and config to the kept input/output
channels (`slice_weights`, `new_config`) and how `mask_channels` zeroes the channels it reads
(`mask_inputs`), and names the kernel that holds its per-filter weights (`kernel_index`) for
the criteria. `handler_for(layer)` walks the layer's class MRO, so a subclass inherits its
parent's handler; a class that declares `prune_role` ("elementwise", "fixed" or "merge", see
`kerasnets.layers`) gets that role's handler; `register_handler` adds a user's own layer class.

`propagate(walk, layer, inputs, output)` receives the analysis in progress: `walk.ids(tensor)`
(channel ids of a tensor), `walk.fix(ids)`, `walk.new_output(layer, channels, fixed=False)`
(fresh ids for a layer's filters, the same ones for every call of a shared layer),
`walk.shared_in(layer, ids)` (ids a layer's weights read, unified over its calls),
`walk.union(a, b)` and `walk.grouped` (grouped conv name -> groups).
"""
from __future__ import annotations

import numpy as np
import tf_keras as keras

L = keras.layers


class UnsupportedLayerError(ValueError):
    """A layer the dependency analysis cannot reason about."""


def _channel_axis_ok(layer, rank) -> bool:
    axis = getattr(layer, "axis", -1)
    axis = axis[0] if isinstance(axis, (list, tuple)) and len(axis) == 1 else axis
    return axis in (-1, rank - 1)


def _all(keep):
    return slice(None) if keep is None else keep


class Handler:
    """Base handler: weights and config untouched, not a channel-mixing reader."""

    kernel_index = None  # index in get_weights() of the kernel with one column per filter

    def validate(self, layer, outputs) -> None:
        """UnsupportedLayerError when the analysis cannot take this call of `layer` at all."""
        if len(outputs) != 1:
            raise UnsupportedLayerError(f"layer {layer.name!r} has {len(outputs)} outputs; only "
                                        "single-output layers are supported")

    def propagate(self, walk, layer, inputs, output):
        """Channel ids of `output` (one call of `layer`) from the ids of its `inputs`."""
        raise NotImplementedError

    def slice_weights(self, layer, weights, keep_in, keep_out) -> list:
        """`weights` restricted to the kept input/output channels (boolean masks; None: all)."""
        return weights

    def new_config(self, layer, keep_in, keep_out) -> dict:
        """The config of the narrowed layer."""
        return layer.get_config()

    def mixes_inputs(self, layer) -> bool:
        """True when the layer's kernel mixes the channels it reads (a consumer to mask)."""
        return False

    def mask_inputs(self, layer, weights, keep_in) -> list:
        """`weights` with the kernel rows of the input channels not in `keep_in` zeroed."""
        weights[self.kernel_index][..., ~keep_in, :] = 0.0
        return weights

    def connections_per_input(self, layer) -> int:
        """Weights that read one input channel of `layer`."""
        raise TypeError(f"layer {layer.name!r} of type {type(layer).__name__} does not mix its inputs")


class PassThrough(Handler):
    """Acts per channel without weights (activations, pooling, padding, dropout)."""

    def propagate(self, walk, layer, inputs, output):
        return walk.ids(inputs[0])


class Fixed(Handler):
    """Input and output channels kept as they are (reshapes, slices, opaque layers)."""

    def propagate(self, walk, layer, inputs, output):
        for tensor in inputs:
            walk.fix(walk.ids(tensor))
        return walk.new_output(layer, output.shape[-1], fixed=True)


class Input(Handler):
    """A model input: its channels are fixed."""

    def propagate(self, walk, layer, inputs, output):
        ids = walk.new(output.shape[-1])
        walk.fix(ids)
        return ids


class Merge(Handler):
    """Element-wise merge: every full-width input carries the same channels."""

    def propagate(self, walk, layer, inputs, output):
        full = [walk.ids(t) for t in inputs if t.shape[-1] == output.shape[-1]]
        for other in full[1:]:
            walk.union(full[0], other)
        return full[0]


class Concatenate(Handler):
    def propagate(self, walk, layer, inputs, output):
        if _channel_axis_ok(layer, len(output.shape)):
            return np.concatenate([walk.ids(t) for t in inputs])
        first = walk.ids(inputs[0])
        for tensor in inputs[1:]:
            walk.union(first, walk.ids(tensor))
        return first


class Flatten(Handler):
    def propagate(self, walk, layer, inputs, output):
        first, shape = walk.ids(inputs[0]), inputs[0].shape
        # NHWC row-major: every spatial position repeats the channel ids
        return np.tile(first, int(np.prod(shape[1:-1]))) if len(shape) > 2 else first


class BatchNorm(Handler):
    """Per-channel weights: the channels it reads are the ones it writes."""

    def propagate(self, walk, layer, inputs, output):
        if not _channel_axis_ok(layer, len(inputs[0].shape)):
            raise UnsupportedLayerError(f"layer {layer.name!r}: BatchNormalization over axis "
                                        f"{layer.axis} (only the last, channel axis is supported)")
        return walk.shared_in(layer, walk.ids(inputs[0]))

    def slice_weights(self, layer, weights, keep_in, keep_out):
        return [w[_all(keep_in)] for w in weights]


def _per_channel_or_fixed(walk, layer, inputs, output):
    """A depthwise layer: per channel with multiplier 1, else its channels are kept."""
    first = walk.ids(inputs[0])
    if getattr(layer, "depth_multiplier", 1) == 1:
        return walk.shared_in(layer, first)
    walk.fix(first)
    return walk.new_output(layer, output.shape[-1], fixed=True)


class Depthwise(Handler):
    def propagate(self, walk, layer, inputs, output):
        return _per_channel_or_fixed(walk, layer, inputs, output)

    def slice_weights(self, layer, weights, keep_in, keep_out):
        keep = _all(keep_in)
        return [weights[0][:, :, keep]] + [b[keep] for b in weights[1:]]


class Mixing(Handler):
    """Dense, Conv2D, SeparableConv2D: read channels through a kernel, write new ones."""

    kernel_index = 0
    width = "filters"  # the config key counting the output channels

    def propagate(self, walk, layer, inputs, output):
        first = walk.ids(inputs[0])
        if getattr(layer, "depth_multiplier", 1) > 1:
            walk.fix(first)
            return walk.new_output(layer, output.shape[-1], fixed=True)
        if getattr(layer, "groups", 1) > 1:
            walk.fix(first)  # each group reads its own slice of the input: kept whole
            walk.grouped[layer.name] = layer.groups
            return walk.new_output(layer, output.shape[-1])
        walk.shared_in(layer, first)
        return walk.new_output(layer, output.shape[-1])

    def slice_weights(self, layer, weights, keep_in, keep_out):
        kernel, *bias = weights
        keep_out = _all(keep_out)
        return [kernel[..., _all(keep_in), :][..., keep_out]] + [b[keep_out] for b in bias]

    def new_config(self, layer, keep_in, keep_out):
        config = layer.get_config()
        if keep_out is not None:
            config[self.width] = int(keep_out.sum())
        return config

    def mixes_inputs(self, layer):
        return getattr(layer, "groups", 1) == 1


class Dense(Mixing):
    width = "units"

    def connections_per_input(self, layer):
        return int(layer.units)


class Conv2D(Mixing):
    """Conv2D, also grouped: a depthwise-like one (groups == filters == inputs) acts per channel."""

    def propagate(self, walk, layer, inputs, output):
        if layer.groups > 1 and layer.groups == inputs[0].shape[-1] == layer.filters:
            return _per_channel_or_fixed(walk, layer, inputs, output)
        return super().propagate(walk, layer, inputs, output)

    def slice_weights(self, layer, weights, keep_in, keep_out):
        # a depthwise-like grouped conv reads and writes one prunable channel per group; an
        # ordinary grouped conv has fixed inputs and only its filters pruned
        if layer.groups > 1 and keep_in is not None:
            return [weights[0][..., keep_in]] + [b[keep_in] for b in weights[1:]]
        return super().slice_weights(layer, weights, keep_in, keep_out)

    def new_config(self, layer, keep_in, keep_out):
        if layer.groups > 1 and keep_in is not None:  # depthwise-like: one filter per group
            return {**layer.get_config(), "filters": int(keep_in.sum()), "groups": int(keep_in.sum())}
        return super().new_config(layer, keep_in, keep_out)

    def connections_per_input(self, layer):
        kh, kw = layer.kernel_size
        return int(kh * kw * layer.filters)


class SeparableConv2D(Mixing):
    kernel_index = 1  # the pointwise kernel mixes channels and holds one column per filter

    def slice_weights(self, layer, weights, keep_in, keep_out):
        depthwise, pointwise, *bias = weights
        keep_in, keep_out = _all(keep_in), _all(keep_out)
        return [depthwise[:, :, keep_in], pointwise[:, :, keep_in][..., keep_out]] + \
               [b[keep_out] for b in bias]

    def connections_per_input(self, layer):
        kh, kw, _, multiplier = layer.depthwise_kernel.shape
        return int(kh * kw * multiplier + multiplier * layer.filters)


class Unsupported(Handler):
    """A layer the analysis refuses, with a message saying why (`None`: the generic one)."""

    def __init__(self, reason: str | None = None):
        self.reason = reason

    def validate(self, layer, outputs):
        if self.reason is not None:  # before the output count: the reason is the better message
            raise UnsupportedLayerError(f"layer {layer.name!r} {self.reason}")
        super().validate(layer, outputs)

    def propagate(self, walk, layer, inputs, output):
        name = type(layer).__name__
        raise UnsupportedLayerError(
            f"layer {layer.name!r} of type {name} is not known to the channel dependency analysis. "
            f"Supported: {', '.join(supported_layers())}. Pass `opaque=({name!r},)` to keep its "
            "input and output channels as they are.")


PASS_THROUGH, FIXED, MERGE, UNKNOWN = PassThrough(), Fixed(), Merge(), Unsupported()
ROLES = {"elementwise": PASS_THROUGH, "fixed": FIXED, "merge": MERGE}

_HANDLERS: dict = {
    **dict.fromkeys((L.ReLU, L.Activation, L.LeakyReLU, L.ELU, L.Softmax, L.Dropout,
                     L.SpatialDropout2D, L.GaussianNoise, L.GaussianDropout, L.MaxPooling2D,
                     L.AveragePooling2D, L.ZeroPadding2D, L.Cropping2D, L.UpSampling2D,
                     L.GlobalAveragePooling2D, L.GlobalMaxPooling2D, L.ActivityRegularization),
                    PASS_THROUGH),
    **dict.fromkeys((L.Add, L.Subtract, L.Multiply, L.Maximum, L.Minimum, L.Average), MERGE),
    # Rescaling and Normalization may hold one constant per channel: their channels stay
    **dict.fromkeys((L.Reshape, L.Permute, L.Rescaling, L.Normalization), FIXED),
    L.InputLayer: Input(), L.BatchNormalization: BatchNorm(), L.DepthwiseConv2D: Depthwise(),
    L.Conv2D: Conv2D(), L.SeparableConv2D: SeparableConv2D(), L.Dense: Dense(),
    L.Concatenate: Concatenate(), L.Flatten: Flatten(),
    # a Conv2D subclass with its kernel the other way round (height, width, out, in)
    L.Conv2DTranspose: UNKNOWN,
    keras.Model: Unsupported("is a nested model; flatten it into one functional model before pruning"),
}


def register_handler(layer_class: type, handler: Handler) -> None:
    """Make `handler` the pruning engine's handler for `layer_class` and its subclasses."""
    if not (isinstance(layer_class, type) and issubclass(layer_class, L.Layer)):
        raise TypeError(f"layer_class must be a tf_keras Layer class, got {layer_class!r}")
    if not isinstance(handler, Handler):
        raise TypeError(f"handler must be a pipelines.prune.handlers.Handler, got {type(handler).__name__}")
    _HANDLERS[layer_class] = handler


def unregister_handler(layer_class: type) -> None:
    """Remove the handler `register_handler` gave `layer_class` (KeyError if it has none)."""
    del _HANDLERS[layer_class]


def handler_for(layer) -> Handler:
    """The handler of the nearest class in `layer`'s MRO that is registered or declares
    `prune_role`; the generic Unsupported handler when none does."""
    for cls in type(layer).__mro__:
        if cls in _HANDLERS:
            return _HANDLERS[cls]
        role = cls.__dict__.get("prune_role")
        if role is not None:
            if role not in ROLES:
                raise ValueError(f"{cls.__name__}.prune_role must be one of {', '.join(ROLES)}, "
                                 f"got {role!r}")
            return ROLES[role]
    return UNKNOWN


def supported_layers() -> list[str]:
    """Names of the layer classes with a handler (and any class declaring `prune_role`)."""
    names = {cls.__name__ for cls, handler in _HANDLERS.items() if not isinstance(handler, Unsupported)}
    return sorted(names) + [f"layers declaring prune_role ({', '.join(ROLES)})"]
