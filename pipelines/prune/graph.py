"""Channel dependency analysis of functional tf_keras models: which channels must go together.

Every channel of every tensor gets an id; ops that tie channels together (Add and the other
element-wise merges, depthwise convolutions and BatchNorm that act per channel, a shared layer
called twice) unify ids, Concatenate, Flatten and the reshapes and transpose of a channel shuffle
rearrange them, and convolutions and Dense layers start new ones. After the walk each union of
ids is one *prunable channel*: removing it deletes a filter from every layer that produces it,
the matching BatchNorm/depthwise entries, and an input slice from every layer that consumes it.
Channels that reach other reshapes, a channel slice, the model's inputs or outputs are *fixed*
(kept as they are).

A grouped convolution reads its input in `groups` equal slices and writes its filters in
`groups` equal blocks: after pruning each slice and each block must still be one size, so every
group must lose the same number of channels (`ChannelGraph.balance`). A prunable channel spans
such a split evenly (a channel shuffle's i-th channel of every group: no constraint), lies in
one group (*local*: removed in step with the other groups), or straddles groups unevenly
(fixed). A channel local to two different splits (a residual stream read by grouped convs of
different group widths) is fixed too, so every constraint can be balanced on its own.
What each layer type does to the ids is its handler's (`handlers`); the walk visits the model's
nodes in the order `functional.nodes_in_order` gives.
"""
from __future__ import annotations

import collections
import dataclasses
import math

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
class Split:
    """One side ("inputs" or "filters") of grouped conv `layer`: `roots[g]` are the channel keys
    of group g, and `parts[g]` the prunable ones local to group g (see the module docstring)."""
    layer: str
    side: str
    roots: np.ndarray                      # (groups, channels per group)
    parts: list = dataclasses.field(default_factory=list)

    def lost(self, removed: set) -> list[int]:
        """Channels each group loses when the prunable channels `removed` go."""
        return [sum(int(r) in removed for r in row) for row in self.roots]


@dataclasses.dataclass
class ChannelGraph:
    """Result of `analyse`: channel ids per tensor and per weight axis, and the prunable channels.

    `roots(ids)` maps ids to their prunable-channel key; `channels` lists every prunable channel
    key; `producers[key]` names the (layer, output index) pairs that make it; `splits` lists the
    grouped convs' input and filter splits.
    """
    model: keras.Model
    layer_in: dict            # layer name -> ids of the channels its weights read
    layer_out: dict           # layer name -> ids of the channels its weights write
    tensor_ids: dict          # id(KerasTensor) -> ids
    tensor_spatial: dict      # id(KerasTensor) -> values per channel (H*W; 1 after pooling)
    fixed: set                # roots that must stay
    producers: dict           # root -> [(layer name, output index)]
    _uf: _UnionFind
    splits: list = dataclasses.field(default_factory=list)

    def roots(self, ids) -> np.ndarray:
        return np.array([self._uf.find(int(i)) for i in np.asarray(ids).ravel()], dtype=np.int64)

    @property
    def channels(self) -> list[int]:
        return sorted(r for r in self.producers if r not in self.fixed)

    @property
    def grouped(self) -> dict:
        """Grouped conv name -> groups, for those with filters that are prunable group by group."""
        return {split.layer: len(split.roots) for split in self.splits
                if split.side == "filters" and any(split.parts)}

    def channel_sets(self) -> list[list[int]]:
        """Prunable channels grouped by the layers that produce them (one residual stream, one
        conv's filters): the unit within which a per-layer ratio is applied."""
        sets: dict = {}
        for root in self.channels:
            key = tuple(sorted({name for name, _ in self.producers[root]}))
            sets.setdefault(key, []).append(root)
        return list(sets.values())

    def filter_groups(self, name: str) -> list[list[int]]:
        """The prunable channels of grouped conv `name` local to each of its filter groups."""
        for split in self.splits:
            if (split.layer, split.side) == (name, "filters"):
                return split.parts
        raise ValueError(f"name must name a grouped conv of {self.model.name!r}, got {name!r}")

    def even_parts(self, channels) -> list[list[int]]:
        """`channels` cut into the groups of the split they are local to (each must lose the
        same number), or `[channels]` when they are local to none."""
        wanted = set(channels)
        for split in self._balanced_splits():
            parts = [[r for r in part if r in wanted] for part in split.parts]
            if sum(map(len, parts)) == len(wanted):
                return parts
        return [list(channels)]

    def _balanced_splits(self) -> list[Split]:
        """One split per distinct grouping of local channels (a residual stream read by several
        grouped convs with the same groups is one constraint)."""
        seen, result = set(), []
        for split in self.splits:
            key = tuple(tuple(part) for part in split.parts)
            if any(split.parts) and key not in seen:
                seen.add(key)
                result.append(split)
        return result

    def balance(self, remove, scores: dict | None = None, *, rounding: str = "nearest") -> list[int]:
        """`remove` evened out over the groups of every grouped conv: the channels local to a
        split go k per group, k = the mean marked per group rounded half up (`rounding="nearest"`,
        lowest `scores` first; scores required) or the fewest marked in any group (`"down"`: only
        channels already in `remove` go, in channel order); every group keeps one of them."""
        chosen = {int(r) for r in remove}
        for split in self._balanced_splits():
            parts = split.parts
            marked = [[r for r in part if r in chosen] for part in parts]
            if rounding == "down":
                k, ranked = min(len(m) for m in marked), marked
            else:
                k = math.floor(sum(len(m) for m in marked) / len(parts) + 0.5)
                ranked = [sorted(part, key=lambda r: scores[r]) for part in parts]
            k = min(k, min(len(part) for part in parts) - 1)
            chosen -= {r for part in parts for r in part}
            chosen |= {r for part in ranked for r in part[:k]}
        return sorted(chosen)

    def check_balanced(self, removed: set) -> None:
        """ValueError unless every grouped conv loses the same number of input channels and of
        filters in each group."""
        for split in self.splits:
            counts = split.lost(removed)
            if len(set(counts)) > 1:
                what = "filters" if split.side == "filters" else "input channels"
                raise ValueError(f"grouped conv {split.layer!r} would lose {counts} {what} per group; "
                                 "every group must lose the same number (use ChannelGraph.balance)")

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
        self.splits: dict = {}  # (layer name, side) -> (groups, ids)

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

    def constrain(self, layer, side: str, groups: int, ids) -> None:
        """The channels `ids` of `layer`'s "inputs" or "filters" fall in `groups` equal groups."""
        self.splits[(layer.name, side)] = (groups, np.asarray(ids))

    def record(self, tensor, ids) -> None:
        self.tensor_ids[id(tensor)] = ids
        # values per channel id: the axes before the channel axis (or before its split axes)
        self.spatial[id(tensor)] = int(np.prod(tensor.shape[1:len(tensor.shape) - ids.ndim]))


def _local_groups(roots: np.ndarray, fixed: set):
    """{prunable root: its group} for the roots of a split that lie in one group, and the
    roots that straddle groups unevenly; roots spread evenly over all groups are neither."""
    counts = [collections.Counter(row.tolist()) for row in roots]
    local, straddling = {}, set()
    for root in set(roots.ravel().tolist()) - fixed:
        per_group = [c[root] for c in counts]
        if len(set(per_group)) == 1:
            continue
        where = [g for g, n in enumerate(per_group) if n]
        if len(where) == 1:
            local[root] = where[0]
        else:
            straddling.add(root)
    return local, straddling


def _stuck(roots: np.ndarray, local: dict) -> set:
    """Local roots no balanced removal can take: some group has at most one of them (it must
    keep one), or they occur a different number of times (equal roots would not be equal
    channels)."""
    groups = [[r for r, g in local.items() if g == index] for index in range(len(roots))]
    counts = collections.Counter(roots.ravel().tolist())
    occurrences = {counts[r] for r in local}
    if min(map(len, groups)) <= 1 or len(occurrences) > 1:
        return set(local)
    return set()


def _settle_splits(uf, raw: dict, fixed: set) -> list[Split]:
    """The splits of every grouped conv, with the channels that cannot be balanced added to
    `fixed`; repeated until no more are (fixing one can leave another split stuck)."""
    splits = [Split(name, side, np.array([uf.find(int(i)) for i in ids]).reshape(groups, -1))
              for (name, side), (groups, ids) in raw.items()]
    while True:
        newly, grouping = set(), {}
        for split in splits:
            local, straddling = _local_groups(split.roots, fixed)
            newly |= straddling | _stuck(split.roots, local)
            key = frozenset(frozenset(r for r, g in local.items() if g == index)
                            for index in range(len(split.roots)))
            for root in local:
                grouping.setdefault(root, set()).add(key)
        newly |= {root for root, keys in grouping.items() if len(keys) > 1}
        if not newly - fixed:
            break
        fixed |= newly
    for split in splits:
        local, _ = _local_groups(split.roots, fixed)
        split.parts = [sorted(r for r, g in local.items() if g == index) for index in range(len(split.roots))]
    return splits


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
        if not handler.takes_split_channels and any(walk.ids(t).ndim > 1 for t in inputs):
            handler = FIXED  # a split channel axis only the shuffle's own layers follow
        walk.record(outputs[0], handler.propagate(walk, layer, inputs, outputs[0]))
    for output in model.outputs:
        walk.fix(walk.ids(output))
    producers: dict = {}
    for name, ids in walk.layer_out.items():
        for index, i in enumerate(ids):
            producers.setdefault(walk.uf.find(int(i)), []).append((name, index))
    fixed = {walk.uf.find(i) for i in walk.fixed_ids}
    splits = _settle_splits(walk.uf, walk.splits, fixed)
    return ChannelGraph(model, walk.layer_in, walk.layer_out, walk.tensor_ids, walk.spatial,
                        fixed, producers, walk.uf, splits)
