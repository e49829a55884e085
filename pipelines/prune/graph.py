"""Channel dependency analysis of functional tf_keras models: which channels must go together.

Every channel of every tensor gets an id; ops that tie channels together (Add and the other
element-wise merges, depthwise convolutions and BatchNorm that act per channel, a shared layer
called twice) unify ids, Concatenate and Flatten rearrange them, and convolutions and Dense
layers start new ones. After the walk each union of ids is one *prunable channel*: removing it
deletes a filter from every layer that produces it, the matching BatchNorm/depthwise entries,
and an input slice from every layer that consumes it. Channels that reach a Reshape, Permute,
channel slice, the input of a grouped convolution, the model's inputs or outputs are *fixed*
(kept as they are). A grouped convolution's filters stay prunable when they feed nothing but
per-channel layers and ordinary consumers: every group must then lose the same number of filters
(`ChannelGraph.balance`), so the kept count stays a multiple of `groups`.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf
import tf_keras as keras

L = keras.layers

# Layers that move or transform values per channel without mixing channels or holding weights.
PASS_THROUGH = (
    L.ReLU, L.Activation, L.LeakyReLU, L.ELU, L.Softmax, L.Dropout, L.SpatialDropout2D,
    L.GaussianNoise, L.GaussianDropout, L.MaxPooling2D, L.AveragePooling2D, L.ZeroPadding2D,
    L.Cropping2D, L.UpSampling2D, L.GlobalAveragePooling2D, L.GlobalMaxPooling2D,
    L.ActivityRegularization,
)
# Element-wise merges: every input carries the same channels.
MERGES = (L.Add, L.Subtract, L.Multiply, L.Maximum, L.Minimum, L.Average)
# Layers whose channel layout the analysis keeps intact (input and output channels fixed).
LAYOUT_CHANGING = (L.Reshape, L.Permute)
# Zoo layers by class name: element-wise ones, and ones kept intact.
PASS_THROUGH_NAMES = {"HardSwish", "HardSigmoid"}
FIXED_NAMES = {"ChannelSlice", "ChannelGather", "LearnedGroupConv", "CondensingDense",
               "BlockDiagonalConv2D"}


class UnsupportedLayerError(ValueError):
    """A layer the dependency analysis cannot reason about."""


def supported_layers() -> list[str]:
    kinds = [c.__name__ for c in (*PASS_THROUGH, *MERGES, *LAYOUT_CHANGING)]
    kinds += ["InputLayer", "Conv2D", "DepthwiseConv2D", "SeparableConv2D", "Dense",
              "BatchNormalization", "Concatenate", "Flatten"]
    return sorted({*kinds, *PASS_THROUGH_NAMES, *FIXED_NAMES})


class _UnionFind:
    def __init__(self):
        self.parent: list[int] = []

    def new(self, count: int) -> np.ndarray:
        start = len(self.parent)
        self.parent.extend(range(start, start + count))
        return np.arange(start, start + count)

    def find(self, i: int) -> int:
        root = i
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[i] != root:  # path compression
            self.parent[i], i = root, self.parent[i]
        return root

    def union(self, a: np.ndarray, b: np.ndarray) -> None:
        for x, y in zip(np.asarray(a).ravel(), np.asarray(b).ravel()):
            rx, ry = self.find(int(x)), self.find(int(y))
            if rx != ry:
                self.parent[max(rx, ry)] = min(rx, ry)


@dataclasses.dataclass
class ChannelGraph:
    """Result of `analyse`: channel ids per tensor and per weight axis, and the prunable channels.

    `roots(ids)` maps ids to their prunable-channel key; `channels` lists every prunable channel
    key; `producers[key]` names the (layer, output index) pairs that make it.
    """
    model: keras.Model
    layer_in: dict            # layer name -> ids of the channels its weights read
    layer_out: dict           # layer name -> ids of the channels its weights write
    tensor_ids: dict          # id(KerasTensor) -> ids
    tensor_spatial: dict      # id(KerasTensor) -> values per channel (H*W; 1 after pooling)
    fixed: set                # roots that must stay
    producers: dict           # root -> [(layer name, output index)]
    _uf: _UnionFind
    grouped: dict = dataclasses.field(default_factory=dict)  # grouped conv name -> groups (filters prunable)

    def roots(self, ids) -> np.ndarray:
        return np.array([self._uf.find(int(i)) for i in np.asarray(ids).ravel()], dtype=np.int64)

    @property
    def channels(self) -> list[int]:
        return sorted(r for r in self.producers if r not in self.fixed)

    def channel_sets(self) -> list[list[int]]:
        """Prunable channels grouped by the layers that produce them (one residual stream, one
        conv's filters): the unit within which a per-layer ratio is applied."""
        sets: dict = {}
        for root in self.channels:
            key = tuple(sorted({name for name, _ in self.producers[root]}))
            sets.setdefault(key, []).append(root)
        return list(sets.values())

    def filter_groups(self, name: str) -> list[list[int]]:
        """The prunable channels of grouped conv `name`, one list per group, in filter order."""
        roots = self.roots(self.layer_out[name])
        return [list(map(int, part)) for part in np.split(roots, self.grouped[name])]

    def balance(self, remove, scores: dict | None = None, *, rounding: str = "nearest") -> list[int]:
        """`remove` with each grouped conv's filters evened out over its groups: k per group,
        k = the mean removed per group (`rounding="nearest"`, lowest `scores` first; scores
        required) or the fewest removed in any group (`"down"`: only channels already in `remove`
        go, in filter order), and every group keeps one filter."""
        chosen = {int(r) for r in remove}
        for name in self.grouped:
            parts = self.filter_groups(name)
            marked = [[r for r in part if r in chosen] for part in parts]
            if rounding == "down":
                k, ranked = min(len(m) for m in marked), marked
            else:
                k = int(round(sum(len(m) for m in marked) / len(parts)))
                ranked = [sorted(part, key=lambda r: scores[r]) for part in parts]
            k = min(k, len(parts[0]) - 1)
            members = {r for part in parts for r in part}
            chosen -= members
            chosen |= {r for part in ranked for r in part[:k]}
        return sorted(chosen)

    def check_balanced(self, removed: set) -> None:
        """ValueError unless every grouped conv loses the same number of filters in each group."""
        for name in self.grouped:
            counts = [sum(r in removed for r in part) for part in self.filter_groups(name)]
            if len(set(counts)) > 1:
                raise ValueError(f"grouped conv {name!r} would lose {counts} filters per group; every "
                                 "group must lose the same number (use ChannelGraph.balance)")

    def kept_mask(self, ids, removed: set) -> np.ndarray:
        return np.array([r not in removed for r in self.roots(ids)], dtype=bool)


def _ids(state, tensor):
    return state["tensor_ids"][id(tensor)]


def _channel_axis_ok(layer, rank) -> bool:
    axis = getattr(layer, "axis", -1)
    axis = axis[0] if isinstance(axis, (list, tuple)) and len(axis) == 1 else axis
    return axis in (-1, rank - 1)


def _shared_weights_ids(state, table, layer, ids):
    """Ids a layer's weights read or write, unified over every call of a shared layer."""
    if layer.name in table:
        state["uf"].union(table[layer.name], ids)
    else:
        table[layer.name] = ids
    return table[layer.name]


def _fix(state, ids):
    state["fixed_ids"].extend(int(i) for i in np.asarray(ids).ravel())


def _new_output(state, layer, channels, *, fixed=False):
    if layer.name in state["layer_out"]:  # shared layer: the same filters in every call
        return state["layer_out"][layer.name]
    ids = state["uf"].new(channels)
    state["layer_out"][layer.name] = ids
    if fixed:
        _fix(state, ids)
    return ids


def _is_depthwise_like(layer, in_channels) -> bool:
    return (type(layer) is L.Conv2D and layer.groups > 1 and layer.groups == in_channels
            == layer.filters)


def _propagate(state, layer, inputs, output):
    """Ids of `output` (one node of `layer`) from the ids of its inputs."""
    uf = state["uf"]
    kind = type(layer)
    name = layer.__class__.__name__
    channels = output.shape[-1]
    first = _ids(state, inputs[0]) if inputs else None
    if name in FIXED_NAMES or isinstance(layer, LAYOUT_CHANGING) or kind in state["opaque"]:
        for tensor in inputs:
            _fix(state, _ids(state, tensor))
        return _new_output(state, layer, channels, fixed=True)
    if isinstance(layer, PASS_THROUGH) or name in PASS_THROUGH_NAMES:
        return first
    if kind is L.BatchNormalization:
        if not _channel_axis_ok(layer, len(inputs[0].shape)):
            raise UnsupportedLayerError(f"layer {layer.name!r}: BatchNormalization over axis "
                                        f"{layer.axis} (only the last, channel axis is supported)")
        return _shared_weights_ids(state, state["layer_in"], layer, first)
    if kind is L.DepthwiseConv2D or _is_depthwise_like(layer, inputs[0].shape[-1]):
        if getattr(layer, "depth_multiplier", 1) == 1:
            return _shared_weights_ids(state, state["layer_in"], layer, first)
        _fix(state, first)
        return _new_output(state, layer, channels, fixed=True)
    if kind in (L.Conv2D, L.SeparableConv2D, L.Dense):
        if getattr(layer, "depth_multiplier", 1) > 1:
            _fix(state, first)
            return _new_output(state, layer, channels, fixed=True)
        if getattr(layer, "groups", 1) > 1:
            _fix(state, first)  # each group reads its own slice of the input: kept whole
            state["grouped"][layer.name] = layer.groups
            return _new_output(state, layer, channels)
        _shared_weights_ids(state, state["layer_in"], layer, first)
        return _new_output(state, layer, channels)
    if isinstance(layer, MERGES):
        full = [_ids(state, t) for t in inputs if t.shape[-1] == channels]
        for other in full[1:]:
            uf.union(full[0], other)
        return full[0]
    if kind is L.Concatenate:
        if _channel_axis_ok(layer, len(output.shape)):
            return np.concatenate([_ids(state, t) for t in inputs])
        for tensor in inputs[1:]:
            uf.union(first, _ids(state, tensor))
        return first
    if kind is L.Flatten:  # NHWC row-major: every spatial position repeats the channel ids
        return np.tile(first, int(np.prod(inputs[0].shape[1:-1]))) if len(inputs[0].shape) > 2 else first
    raise UnsupportedLayerError(
        f"layer {layer.name!r} of type {name} is not known to the channel dependency analysis. "
        f"Supported: {', '.join(supported_layers())}. Pass opaque=({name!r},) to keep its input "
        "and output channels as they are.")


def _spatial(tensor) -> int:
    return int(np.prod(tensor.shape[1:-1])) if len(tensor.shape) > 2 else 1


def _nodes_in_order(model):
    nodes = []
    for depth in sorted(model._nodes_by_depth, reverse=True):
        nodes.extend(model._nodes_by_depth[depth])
    return nodes


def analyse(model: keras.Model, *, opaque=()) -> ChannelGraph:
    """Channel dependency graph of a functional model; `opaque` names extra layer classes whose
    channels are kept intact. Raises UnsupportedLayerError for layers it does not know."""
    if not isinstance(model, keras.Model) or not getattr(model, "_is_graph_network", False):
        raise TypeError(f"channel pruning needs a functional tf_keras Model, got {type(model).__name__}")
    opaque_types = {type(layer) for layer in model.layers if type(layer).__name__ in set(opaque)}
    state = {"uf": _UnionFind(), "tensor_ids": {}, "layer_in": {}, "layer_out": {},
             "fixed_ids": [], "opaque": opaque_types, "spatial": {}, "grouped": {}}
    for node in _nodes_in_order(model):
        layer = node.outbound_layer
        outputs = tf.nest.flatten(node.outputs)
        if isinstance(layer, keras.Model):
            raise UnsupportedLayerError(f"layer {layer.name!r} is a nested model; flatten it into "
                                        "one functional model before pruning")
        if isinstance(layer, L.InputLayer):
            ids = state["uf"].new(outputs[0].shape[-1])
            _fix(state, ids)
            state["tensor_ids"][id(outputs[0])] = ids
            state["spatial"][id(outputs[0])] = _spatial(outputs[0])
            continue
        if len(outputs) != 1:
            raise UnsupportedLayerError(f"layer {layer.name!r} has {len(outputs)} outputs; only "
                                        "single-output layers are supported")
        inputs = tf.nest.flatten(node.keras_inputs)
        state["tensor_ids"][id(outputs[0])] = _propagate(state, layer, inputs, outputs[0])
        state["spatial"][id(outputs[0])] = _spatial(outputs[0])
    for output in model.outputs:
        _fix(state, state["tensor_ids"][id(output)])
    uf = state["uf"]
    producers: dict = {}
    for name, ids in state["layer_out"].items():
        for index, i in enumerate(ids):
            producers.setdefault(uf.find(int(i)), []).append((name, index))
    fixed = {uf.find(i) for i in state["fixed_ids"]}
    grouped = {}
    for name, groups in state["grouped"].items():
        roots = [uf.find(int(i)) for i in state["layer_out"][name]]
        # a filter tied to other producers (a residual Add), to its own other filters or to a
        # fixed channel could not be removed evenly per group: such a grouped conv keeps them all
        if len(set(roots)) == len(roots) and all(len(producers[r]) == 1 and r not in fixed for r in roots):
            grouped[name] = groups
        else:
            fixed.update(roots)
    return ChannelGraph(model, state["layer_in"], state["layer_out"], state["tensor_ids"],
                        state["spatial"], fixed, producers, uf, grouped)
