"""Complexity-driven pruning (arXiv 2208.12816): prune layers by their share of a cost.

Each channel set gets a ratio proportional to how much of the network's parameters (PA),
multiply-accumulates (FA) or peak activation memory (MA) its channels account for, so the
expensive layers shrink most; within a set the filters with the smallest L1 norm go. The pruned
architecture is meant to be trained directly (`strategy="scratch"`), with no ranking/fine-tune loop.
"""
from __future__ import annotations

import numpy as np

import kerasnets
from kerasnets.profile import peak_live_layers
from kerasnets.pipelines.prune.graph import ChannelGraph
from kerasnets.pipelines.prune.structured import check_ratio, filter_norms, ratio_or_target

MODES = {"pa": "params", "fa": "macs", "ma": "peak_ram"}


def _costs(graph: ChannelGraph, mode: str) -> dict:
    """Cost attributable to each prunable channel: its share of the parameters (PA) or MACs (FA)
    of every layer that reads or writes it, or (MA) the activation values it holds in the
    tensors live when activation memory peaks (channels elsewhere cost nothing at the peak)."""
    cost = {root: 0.0 for root in graph.channels}
    if mode == "ma":
        for name in peak_live_layers(graph.model):
            output = graph.model.get_layer(name).output
            key = id(output)
            if key in graph.tensor_ids:
                for root in graph.roots(graph.tensor_ids[key]).tolist():
                    if root in cost:
                        cost[root] += graph.tensor_spatial[key]
        return cost
    rows = {row["name"]: row for row in kerasnets.profile(graph.model)["layers"]}
    for layer in graph.model.layers:
        total = layer.count_params() if mode == "pa" else rows.get(layer.name, {}).get("macs", 0)
        for table in (graph.layer_in, graph.layer_out):
            if layer.name in table:
                roots = graph.roots(table[layer.name])
                for root in roots.tolist():
                    if root in cost:
                        cost[root] += total / len(roots)
    return cost


def set_ratios(graph: ChannelGraph, ratio: float, mode: str) -> dict:
    """Per-set ratios averaging `ratio` over all prunable channels, proportional to each set's
    cost per channel, capped at 0.9."""
    ratio = check_ratio(ratio)
    if mode not in MODES:
        raise ValueError(f"complexity mode must be one of {', '.join(MODES)}, got {mode!r}")
    cost = _costs(graph, mode)
    sets = graph.channel_sets()
    weight = np.array([np.mean([cost[r] for r in s]) for s in sets])
    sizes = np.array([len(s) for s in sets])
    weight = weight / max(float((weight * sizes).sum() / sizes.sum()), 1e-12)
    return {i: float(min(0.9, ratio * w)) for i, w in enumerate(weight)}


def scores(graph: ChannelGraph, context=None) -> dict:
    return filter_norms(graph, order=1)


def prune(model, ratio: float, mode: str, *, graph: ChannelGraph | None = None, rounds: int = 4):
    """Complexity-driven pruning of `ratio` of the prunable channels. Memory-aware mode works in
    `rounds`: once the tensors at the peak shrink, the peak moves, so the costs are re-measured."""
    from kerasnets.pipelines.prune.graph import analyse
    from kerasnets.pipelines.prune.structured import prune_by_scores

    ratio = check_ratio(ratio)
    rounds = rounds if mode == "ma" else 1
    graph = graph or analyse(model)
    keep = len(graph.channels) * (1.0 - ratio)  # channels left at the end
    for done in range(rounds):
        graph = graph or analyse(model)
        # each round's share is taken from what is still to go, not fixed up front: a set loses
        # int(share x its size) channels, which is 0 for small sets in an early round, and the
        # later rounds make that up (a fixed share left small models unpruned)
        per_round = 1.0 - (keep / len(graph.channels)) ** (1.0 / (rounds - done))
        if per_round <= 0:
            break
        model = prune_by_scores(model, scores(graph), per_round, graph=graph,
                                set_ratios=set_ratios(graph, per_round, mode))
        graph = None
    return model


def apply(model, request, context, *, mode: str):
    """The registered entry (see `criteria`): complexity-driven pruning in `mode` to the
    request's ratio or target."""
    pruner = lambda ratio: prune(model, ratio, mode, graph=context.graph)  # noqa: E731
    return ratio_or_target(model, pruner, request.ratio, request.target)
