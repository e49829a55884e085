"""Model surgery: rebuild a functional model without chosen channels, surviving weights copied in.

`prune_channels` returns a physically smaller model (fewer filters, narrower BatchNorm and
depthwise layers, narrower consumers); `mask_channels` returns a same-size copy in which the
chosen channels are cut where they are consumed — the two give the same outputs, which is how
the surgery is tested.
"""
from __future__ import annotations

import tf_keras as keras

from kerasnets.pipelines.prune.graph import ChannelGraph, analyse
from kerasnets.pipelines.prune.handlers import handler_for


def _masks(graph: ChannelGraph, layer, removed):
    ins = graph.layer_in.get(layer.name)
    outs = graph.layer_out.get(layer.name)
    return (None if ins is None else graph.kept_mask(ins, removed),
            None if outs is None else graph.kept_mask(outs, removed))


def _check_nothing_emptied(graph, model, removed):
    for layer in model.layers:
        for keep in _masks(graph, layer, removed):
            if keep is not None and not keep.any():
                raise ValueError(f"pruning would remove every channel of layer {layer.name!r}; "
                                 "keep at least one (lower the ratio)")


def _removed_set(graph, remove) -> set:
    removed = {int(r) for r in graph.roots(list(remove))} if len(remove) else set()
    fixed = removed & graph.fixed
    if fixed:
        raise ValueError(f"{len(fixed)} of the channels to remove are fixed (they reach a reshape, "
                         "slice, unevenly split groups or the model's inputs/outputs); choose from "
                         "graph.channels")
    graph.check_balanced(removed)
    return removed


def prune_channels(model: keras.Model, remove, *, graph: ChannelGraph | None = None) -> keras.Model:
    """A smaller copy of `model` without the prunable channels `remove` (keys of graph.channels)."""
    graph = graph or analyse(model)
    removed = _removed_set(graph, remove)
    _check_nothing_emptied(graph, model, removed)
    assignments = {}

    def rebuild(layer):
        keep_in, keep_out = _masks(graph, layer, removed)
        handler = handler_for(layer)
        assignments[layer.name] = handler.slice_weights(layer, layer.get_weights(), keep_in, keep_out)
        return layer.__class__.from_config(handler.new_config(layer, keep_in, keep_out))

    pruned = keras.models.clone_model(model, clone_function=rebuild)
    for layer in pruned.layers:
        if layer.name in assignments and assignments[layer.name]:
            layer.set_weights(assignments[layer.name])
    return pruned


def mask_channels(model: keras.Model, remove, *, graph: ChannelGraph | None = None) -> keras.Model:
    """A same-size copy of `model` whose layers no longer read the channels `remove` (the
    consumers' input weights for them are zero): the reference `prune_channels` must equal."""
    graph = graph or analyse(model)
    removed = _removed_set(graph, remove)
    masked = keras.models.clone_model(model)
    masked.set_weights(model.get_weights())
    for layer in masked.layers:
        keep_in, _ = _masks(graph, layer, removed)
        handler = handler_for(layer)
        if keep_in is not None and handler.masks_inputs(layer):
            layer.set_weights(handler.mask_inputs(layer, layer.get_weights(), keep_in))
    return masked
