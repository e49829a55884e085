"""The table of layer handlers: everything the pruning engine knows about a layer type, in one place.

A handler tells the channel dependency analysis how a layer couples and propagates channel ids
(`propagate`), tells the surgery how to cut its weights and config to the kept input/output
channels (`slice_weights`, `new_config`) and how `mask_channels` zeroes the channels it reads
(`mask_inputs`), and gives the kernel with one column per filter (`filter_kernel`) to the
criteria. `handler_for(layer)` walks the layer's class MRO, so a subclass inherits its parent's
handler; a class that declares `prune_role` ("elementwise", "fixed", "merge" or "indexed", see
`kerasnets.layers`) gets that role's handler; `register_handler` adds a user's own layer class.

`propagate(walk, layer, inputs, output)` receives the analysis in progress: `walk.ids(tensor)`
(channel ids of a tensor), `walk.fix(ids)`, `walk.new_output(layer, channels, fixed=False)`
(fresh ids for a layer's filters, the same ones for every call of a shared layer),
`walk.shared_in(layer, ids)` (ids a layer's weights read, unified over its calls),
`walk.union(a, b)` and `walk.constrain(layer, side, groups, ids)` (the channels `ids` of a grouped
conv's "inputs" or "filters" split into `groups` equal groups, each of which must lose the same
number). A tensor's ids are a 1-D array (one per channel) except between the reshapes of a channel
shuffle, where they have the shape of the split channel axis (see `Reshape`).
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
    takes_split_channels = False  # reads a tensor whose channel axis a reshape has split

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
        """True when the layer's kernel mixes the channels it reads through one row per input
        channel (a consumer the QSFM and SCL criteria can rewrite row by row)."""
        return False

    def masks_inputs(self, layer) -> bool:
        """True when `mask_channels` must zero this layer's weights for the channels it no longer
        reads (every layer that mixes channels, whatever its kernel layout)."""
        return self.mixes_inputs(layer)

    def filter_kernel(self, layer, weights):
        """The kernel holding one column per output channel, in output channel order."""
        return weights[self.kernel_index]

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
    """Input and output channels kept as they are (slices, opaque layers)."""

    takes_split_channels = True

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


def _channel_block(shape, size):
    """The trailing axes of `shape` that hold `size` channel values (the shape after the
    spatial ones), or None when no run of trailing axes holds exactly that many."""
    if None in shape:
        return None
    for k in range(1, len(shape) + 1):
        if int(np.prod(shape[-k:])) == size:
            return tuple(shape[-k:])
    return None


class Reshape(Handler):
    """A reshape that only splits or merges the channel axis (the two reshapes of a channel
    shuffle) keeps the channel ids, laid out in the new shape; any other reshape fixes them.

    After a split the ids have the shape of the split axes, (G, C/G) for a shuffle of G groups.
    Pruning may only shorten the last of them (the target shape keeps the others), so the ids
    along every other axis are one channel: a shuffle's groups lose their i-th channel together,
    every group the same number, and the shuffle stays a shuffle."""

    takes_split_channels = True

    def propagate(self, walk, layer, inputs, output):
        ids = walk.ids(inputs[0])
        block = _channel_block(tuple(output.shape[1:]), ids.size)
        if block is None:
            return FIXED.propagate(walk, layer, inputs, output)
        walk.shared_in(layer, ids.ravel())
        ids = ids.reshape(block)
        rows = ids.reshape(-1, block[-1])
        for row in rows[1:]:
            walk.union(rows[0], row)
        return ids

    def new_config(self, layer, keep_in, keep_out):
        config = layer.get_config()
        target = list(config["target_shape"])
        if keep_in is None or target[-1] == -1:
            return config
        block = _channel_block(tuple(target), len(keep_in))
        target[-1] = int(keep_in.sum()) // int(np.prod(block[:-1]))
        return {**config, "target_shape": tuple(target)}


class Permute(Handler):
    """A permutation among the split channel axes (a channel shuffle's transpose), or among the
    spatial axes alone, moves the ids with it; one that mixes the two fixes the channels."""

    takes_split_channels = True

    def propagate(self, walk, layer, inputs, output):
        ids = walk.ids(inputs[0])
        dims = [d - 1 for d in layer.dims]  # over the axes after the batch
        lead = len(dims) - ids.ndim
        if sorted(dims[lead:]) != list(range(lead, len(dims))):
            return FIXED.propagate(walk, layer, inputs, output)
        return ids.transpose([d - lead for d in dims[lead:]])


class BatchNorm(Handler):
    """Per-channel weights: the channels it reads are the ones it writes."""

    def propagate(self, walk, layer, inputs, output):
        if not _channel_axis_ok(layer, len(inputs[0].shape)):
            raise UnsupportedLayerError(f"layer {layer.name!r}: BatchNormalization over axis "
                                        f"{layer.axis} (only the last, channel axis is supported)")
        return walk.shared_in(layer, walk.ids(inputs[0]))

    def slice_weights(self, layer, weights, keep_in, keep_out):
        return [w[_all(keep_in)] for w in weights]


def _per_channel(walk, layer, inputs, output):
    """A depthwise layer: output channel c * multiplier + k comes from input channel c alone, so
    each input channel and its `multiplier` outputs are one channel to prune."""
    first = walk.shared_in(layer, walk.ids(inputs[0]))
    return np.repeat(first, getattr(layer, "depth_multiplier", 1))


class Depthwise(Handler):
    def propagate(self, walk, layer, inputs, output):
        return _per_channel(walk, layer, inputs, output)

    def slice_weights(self, layer, weights, keep_in, keep_out):
        if keep_in is None:
            return weights
        per_output = np.repeat(keep_in, layer.depth_multiplier)  # the bias has one per output
        return [weights[0][:, :, keep_in]] + [b[per_output] for b in weights[1:]]


class Mixing(Handler):
    """Dense, Conv2D, SeparableConv2D: read channels through a kernel, write new ones."""

    kernel_index = 0
    width = "filters"  # the config key counting the output channels

    def propagate(self, walk, layer, inputs, output):
        first = walk.ids(inputs[0])
        if getattr(layer, "depth_multiplier", 1) > 1:
            walk.fix(first)
            return walk.new_output(layer, output.shape[-1], fixed=True)
        walk.shared_in(layer, first)
        ids = walk.new_output(layer, output.shape[-1])
        groups = getattr(layer, "groups", 1)
        if groups > 1:  # each group reads its own slice of the input and writes its own filters
            walk.constrain(layer, "inputs", groups, walk.layer_in[layer.name])
            walk.constrain(layer, "filters", groups, ids)
        return ids

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


def _group_blocks(keep, groups):
    """A per-channel mask as one row per group (None: every channel of every group)."""
    return None if keep is None else np.reshape(keep, (groups, -1))


class Conv2D(Mixing):
    """Conv2D, also grouped: a depthwise-like one (groups == filters == inputs) acts per channel;
    an ordinary grouped one loses input channels and filters evenly from every group (the
    analysis sees to it), so each group's kernel block is cut on its own."""

    def propagate(self, walk, layer, inputs, output):
        if layer.groups > 1 and layer.groups == inputs[0].shape[-1] == layer.filters:
            return _per_channel(walk, layer, inputs, output)
        return super().propagate(walk, layer, inputs, output)

    @staticmethod
    def _depthwise_like(layer, keep_out):
        # the analysis gives a depthwise-like conv no filters of its own, so no output mask
        return layer.groups > 1 and keep_out is None

    def slice_weights(self, layer, weights, keep_in, keep_out):
        if self._depthwise_like(layer, keep_out):  # one prunable channel per group
            keep = _all(keep_in)
            return [weights[0][..., keep]] + [b[keep] for b in weights[1:]]
        if layer.groups == 1:
            return super().slice_weights(layer, weights, keep_in, keep_out)
        kernel, *bias = weights
        rows, cols = _group_blocks(keep_in, layer.groups), _group_blocks(keep_out, layer.groups)
        per_group = kernel.shape[-1] // layer.groups
        blocks = []
        for g in range(layer.groups):
            block = kernel[..., g * per_group:(g + 1) * per_group]
            block = block[:, :, _all(None if rows is None else rows[g])]
            blocks.append(block[..., _all(None if cols is None else cols[g])])
        return [np.concatenate(blocks, axis=-1)] + [b[_all(keep_out)] for b in bias]

    def new_config(self, layer, keep_in, keep_out):
        if self._depthwise_like(layer, keep_out):
            width = layer.filters if keep_in is None else int(keep_in.sum())
            return {**layer.get_config(), "filters": width, "groups": width}
        return super().new_config(layer, keep_in, keep_out)

    def masks_inputs(self, layer):
        return True

    def mask_inputs(self, layer, weights, keep_in):
        if layer.groups == 1:
            return super().mask_inputs(layer, weights, keep_in)
        kernel = weights[self.kernel_index]
        if kernel.shape[2] == 1 and layer.groups == layer.filters:
            return weights  # depthwise-like: per channel, nothing mixed
        rows = _group_blocks(keep_in, layer.groups)
        per_group = kernel.shape[-1] // layer.groups
        for g in range(layer.groups):
            kernel[:, :, ~rows[g], g * per_group:(g + 1) * per_group] = 0.0
        return weights

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


def _index_rows(layer) -> np.ndarray:
    """An indexed layer's index, one row per group."""
    return np.reshape(layer.indices, (getattr(layer, "groups", 1), -1))


def _output_of_column(layer, columns: int) -> np.ndarray:
    """The output channel of each kernel column: column g * n + t writes channel g + t * groups."""
    groups = getattr(layer, "groups", 1)
    group, t = np.divmod(np.arange(columns), columns // groups)
    return group + t * groups


def _cut_index(layer, keep_in):
    """(new index rows, kernel rows each group keeps) once the input channels not in `keep_in`
    are gone. Groups keep different numbers of rows; the short ones are padded (by the caller,
    with zero rows) to the longest, their padding pointing at a channel they already read."""
    rows = _index_rows(layer)
    if keep_in is None:
        return rows, [np.arange(rows.shape[1])] * len(rows)
    renumber = np.cumsum(keep_in) - 1
    kept = [np.flatnonzero(keep_in[row]) for row in rows]
    width = max(1, max(len(k) for k in kept))
    new_rows = []
    for row, k in zip(rows, kept):
        entries = renumber[row[k]].tolist()
        new_rows.append(entries + [entries[0] if entries else 0] * (width - len(entries)))
    return np.array(new_rows), kept


class Indexed(Mixing):
    """A layer reading the input channels its `indices` lists, group by group (kerasnets'
    IndexedGroupConv and IndexedDense, `prune_role = "indexed"`): kernel rows [g * n, (g + 1) * n)
    belong to group g and read channels `indices[g * n + r]`; its filter t of group g writes
    output channel g + t * groups (the folded Permute).

    It runs as a dense layer with zeros, so every input channel is prunable on its own: the
    index entries of a removed channel go with their kernel rows, the index is renumbered to the
    kept channels, and a group that lost fewer rows than another keeps zero rows (pointing at a
    channel it already reads) so that all groups stay one size. Its outputs keep the folded
    Permute's layout only if every group keeps the same filters t: filter t of every group is one
    channel to prune."""

    def propagate(self, walk, layer, inputs, output):
        walk.shared_in(layer, walk.ids(inputs[0]))
        ids = walk.new_output(layer, output.shape[-1])
        by_t = ids.reshape(-1, getattr(layer, "groups", 1))  # row t: filter t of every group
        for group in range(1, by_t.shape[1]):
            walk.union(by_t[:, 0], by_t[:, group])
        return ids

    def filter_kernel(self, layer, weights):
        kernel = weights[self.kernel_index]
        return kernel[..., np.argsort(_output_of_column(layer, kernel.shape[-1]))]

    def slice_weights(self, layer, weights, keep_in, keep_out):
        kernel, *bias = weights
        rows, kept = _cut_index(layer, keep_in)
        per_group = kernel.shape[-1] // len(rows)
        columns = None if keep_out is None else keep_out[_output_of_column(layer, kernel.shape[-1])]
        blocks = []
        for g, k in enumerate(kept):
            block = np.take(kernel[..., g * per_group:(g + 1) * per_group], k, axis=-2)
            padding = list(block.shape)
            padding[-2] = rows.shape[1] - len(k)
            block = np.concatenate([block, np.zeros(padding, block.dtype)], axis=-2)
            blocks.append(block if columns is None else block[..., columns[g * per_group:(g + 1) * per_group]])
        return [np.concatenate(blocks, axis=-1)] + [b[_all(keep_out)] for b in bias]

    def new_config(self, layer, keep_in, keep_out):
        config = {**layer.get_config(), "indices": _cut_index(layer, keep_in)[0].ravel().tolist()}
        width = "filters" if "filters" in config else "units"
        if keep_out is not None:
            config[width] = int(keep_out.sum())
        return config

    def mixes_inputs(self, layer):
        return False  # its rows follow the index, not the input channels

    def masks_inputs(self, layer):
        return True

    def mask_inputs(self, layer, weights, keep_in):
        kernel = weights[self.kernel_index]
        rows = _index_rows(layer)
        per_group = kernel.shape[-1] // len(rows)
        for g, row in enumerate(rows):
            kernel[..., ~keep_in[row], g * per_group:(g + 1) * per_group] = 0.0
        return weights


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
ROLES = {"elementwise": PASS_THROUGH, "fixed": FIXED, "merge": MERGE, "indexed": Indexed()}

_HANDLERS: dict = {
    **dict.fromkeys((L.ReLU, L.Activation, L.LeakyReLU, L.ELU, L.Softmax, L.Dropout,
                     L.SpatialDropout2D, L.GaussianNoise, L.GaussianDropout, L.MaxPooling2D,
                     L.AveragePooling2D, L.ZeroPadding2D, L.Cropping2D, L.UpSampling2D,
                     L.GlobalAveragePooling2D, L.GlobalMaxPooling2D, L.ActivityRegularization),
                    PASS_THROUGH),
    **dict.fromkeys((L.Add, L.Subtract, L.Multiply, L.Maximum, L.Minimum, L.Average), MERGE),
    # Rescaling and Normalization may hold one constant per channel: their channels stay
    **dict.fromkeys((L.Rescaling, L.Normalization), FIXED),
    L.Reshape: Reshape(), L.Permute: Permute(),
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
