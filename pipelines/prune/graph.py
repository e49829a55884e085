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
(`ChannelGraph.balance`), so the kept count stays a multiple of `groups`. What each layer type
does to the ids is its handler's (`handlers`); the walk visits the model's nodes in the order
`functional.nodes_in_order` gives.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf
import tf_keras as keras

from kerasnets.pipelines.prune.functional import is_functional, nodes_in_order
from kerasnets.pipelines.prune.handlers import (FIXED, UnsupportedLayerError, handler_for,
                                                supported_layers)

__all__ = ["ChannelGraph", "UnsupportedLayerError", "analyse", "supported_layers"]


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


class _Walk:
    """The analysis in progress, as the layer handlers see it (see `handlers`)."""

    def __init__(self):
        self.uf = _UnionFind()
        self.tensor_ids: dict = {}
        self.spatial: dict = {}
        self.layer_in: dict = {}
        self.layer_out: dict = {}
        self.fixed_ids: list = []
        self.grouped: dict = {}

    def ids(self, tensor):
        return self.tensor_ids[id(tensor)]

    def new(self, count: int) -> np.ndarray:
        return self.uf.new(count)

    def union(self, a, b) -> None:
        self.uf.union(a, b)

    def fix(self, ids) -> None:
        self.fixed_ids.extend(int(i) for i in np.asarray(ids).ravel())

    def shared_in(self, layer, ids):
        """Ids a layer's weights read, unified over every call of a shared layer."""
        if layer.name in self.layer_in:
            self.uf.union(self.layer_in[layer.name], ids)
        else:
            self.layer_in[layer.name] = ids
        return self.layer_in[layer.name]

    def new_output(self, layer, channels, *, fixed=False):
        if layer.name in self.layer_out:  # shared layer: the same filters in every call
            return self.layer_out[layer.name]
        ids = self.uf.new(channels)
        self.layer_out[layer.name] = ids
        if fixed:
            self.fix(ids)
        return ids

    def record(self, tensor, ids) -> None:
        self.tensor_ids[id(tensor)] = ids
        self.spatial[id(tensor)] = int(np.prod(tensor.shape[1:-1])) if len(tensor.shape) > 2 else 1


def _grouped_and_fixed(walk, producers):
    """Grouped convs whose filters stay prunable, and every fixed root."""
    uf = walk.uf
    fixed = {uf.find(i) for i in walk.fixed_ids}
    grouped = {}
    for name, groups in walk.grouped.items():
        roots = [uf.find(int(i)) for i in walk.layer_out[name]]
        # a filter tied to other producers (a residual Add), to its own other filters or to a
        # fixed channel could not be removed evenly per group: such a grouped conv keeps them all
        if len(set(roots)) == len(roots) and all(len(producers[r]) == 1 and r not in fixed for r in roots):
            grouped[name] = groups
        else:
            fixed.update(roots)
    return grouped, fixed


def analyse(model: keras.Model, *, opaque=()) -> ChannelGraph:
    """Channel dependency graph of a functional model; `opaque` names extra layer classes whose
    channels are kept intact. Raises UnsupportedLayerError for layers it does not know."""
    if not is_functional(model):
        raise TypeError(f"model must be a functional tf_keras Model (channel pruning follows its "
                        f"graph), got {type(model).__name__}")
    opaque = set(opaque)
    walk = _Walk()
    for node in nodes_in_order(model):
        layer = node.outbound_layer
        handler = FIXED if type(layer).__name__ in opaque else handler_for(layer)
        outputs = tf.nest.flatten(node.outputs)
        handler.validate(layer, outputs)
        inputs = tf.nest.flatten(node.keras_inputs)
        walk.record(outputs[0], handler.propagate(walk, layer, inputs, outputs[0]))
    for output in model.outputs:
        walk.fix(walk.ids(output))
    producers: dict = {}
    for name, ids in walk.layer_out.items():
        for index, i in enumerate(ids):
            producers.setdefault(walk.uf.find(int(i)), []).append((name, index))
    grouped, fixed = _grouped_and_fixed(walk, producers)
    return ChannelGraph(model, walk.layer_in, walk.layer_out, walk.tensor_ids, walk.spatial,
                        fixed, producers, walk.uf, grouped)
