"""Structured channel pruning on top of the dependency graph: scores, selection, budgets.

A criterion turns a model into one score per prunable channel (higher = more important);
`select` picks the channels to remove, per channel set (a per-layer ratio) or globally (one
threshold over the whole net); `prune_by_scores` and `prune_to_target` rebuild the smaller model.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable

import numpy as np
import tf_keras as keras

import kerasnets
from kerasnets.pipelines.prune import surgery
from kerasnets.pipelines.prune.graph import ChannelGraph, analyse
from kerasnets.pipelines.prune.handlers import handler_for

L = keras.layers
TARGET_KEYS = ("params", "macs", "int8_kb", "peak_ram")


def check_ratio(ratio) -> float:
    ratio = float(ratio)
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"pruning ratio `ratio` must be in (0, 1), got {ratio}")
    return ratio


def producer_kernel_columns(graph: ChannelGraph, root: int):
    """(layer, output index) pairs of the weight layers that produce prunable channel `root`."""
    return [(graph.model.get_layer(name), index) for name, index in graph.producers[root]]


def filter_norms(graph: ChannelGraph, order: int = 1) -> dict:
    """L1 (or L2) norm of every prunable channel's filters, summed over the layers producing it."""
    cache: dict = {}
    scores = {}
    for root in graph.channels:
        total = 0.0
        for layer, index in producer_kernel_columns(graph, root):
            if layer.name not in cache:
                kernel = handler_for(layer).filter_kernel(layer, layer.get_weights())
                flat = np.abs(kernel.reshape(-1, kernel.shape[-1]))
                cache[layer.name] = (flat ** order).sum(0) ** (1.0 / order)
            total += float(cache[layer.name][index])
        scores[root] = total
    return scores


def batchnorm_channels(graph: ChannelGraph):
    """Yield (BatchNorm layer, channel index, prunable root) for every BN entry of a prunable channel."""
    for layer in graph.model.layers:
        if isinstance(layer, L.BatchNormalization) and layer.name in graph.layer_in:
            for index, root in enumerate(graph.roots(graph.layer_in[layer.name])):
                if root in graph.producers and root not in graph.fixed:
                    yield layer, index, int(root)


def batchnorm_scores(graph: ChannelGraph, per_entry: Callable) -> dict:
    """Sum of per_entry(gamma, beta) over each channel's BatchNorm entries; channels without
    BatchNorm score +inf (a BN criterion has nothing to say about them, so they stay)."""
    scores = {root: 0.0 for root in graph.channels}
    seen = set()
    for layer, index, root in batchnorm_channels(graph):
        gamma = layer.gamma.numpy()[index] if layer.scale else 1.0
        beta = layer.beta.numpy()[index] if layer.center else 0.0
        scores[root] += float(per_entry(gamma, beta))
        seen.add(root)
    return {root: (score if root in seen else math.inf) for root, score in scores.items()}


def select(graph: ChannelGraph, scores: dict, ratio: float, *, scope: str = "layer",
           set_ratios: dict | None = None) -> list[int]:
    """Channels to remove: the lowest-scoring `ratio` of each channel set (`scope="layer"`, or
    per-set ratios in `set_ratios` keyed by set index), or of all prunable channels with one
    global threshold (`scope="global"`); every set keeps at least one channel, and a grouped
    conv loses the same number of filters from each group (`ChannelGraph.balance`)."""
    ratio = check_ratio(ratio)
    sets = graph.channel_sets()
    if scope == "global":
        finite = sorted((scores[r], r) for s in sets for r in s if math.isfinite(scores[r]))
        doomed = {r for _, r in finite[:int(ratio * sum(len(s) for s in sets))]}
        remove = []
        for channels in sets:
            gone = [r for r in channels if r in doomed]
            if len(gone) == len(channels):  # keep the set's best channel
                gone.remove(max(gone, key=lambda r: scores[r]))
            remove += gone
        return graph.balance(remove, scores)
    if scope != "layer":
        raise ValueError(f"scope must be 'layer' or 'global', got {scope!r}")
    remove = []
    for i, channels in enumerate(sets):
        share = ratio if set_ratios is None else set_ratios.get(i, 0.0)
        ranked = sorted((r for r in channels if math.isfinite(scores[r])), key=lambda r: scores[r])
        count = min(int(share * len(channels)), len(channels) - 1, len(ranked))
        remove += ranked[:count]
    return graph.balance(remove, scores)


def prune_by_scores(model, scores: dict, ratio: float, *, scope="layer", graph=None,
                    set_ratios=None) -> keras.Model:
    graph = graph or analyse(model)
    remove = select(graph, scores, ratio, scope=scope, set_ratios=set_ratios)
    return surgery.prune_channels(model, remove, graph=graph)


# ---------------------------------------------------------------------------------------------
# budgets: prune until a target is met


@dataclasses.dataclass(frozen=True)
class Target:
    """Budgets the pruned model must meet, every one of them: ((key, limit), ...)."""
    limits: tuple[tuple[str, float], ...]

    @classmethod
    def parse(cls, text: str) -> "Target":
        """'macs=20M', 'params=50k', 'peak_ram=64kB', 'int8_kb=40', or several joined by commas
        ('int8_kb=90,peak_ram=55kB')."""
        limits = {}
        for part in text.split(","):
            key, sep, value = part.partition("=")
            key = key.strip()
            if not sep or key not in TARGET_KEYS:
                raise ValueError(f"target must be KEY=VALUE[,KEY=VALUE...] with KEY one of "
                                 f"{', '.join(TARGET_KEYS)}; got {text!r}")
            if key in limits:
                raise ValueError(f"target names {key} twice in {text!r}")
            limits[key] = _parse_amount(value, key)
        return cls(tuple(limits.items()))

    def __str__(self) -> str:
        return ",".join(f"{key}={value:g}" for key, value in self.limits)

    def missed(self, measured: dict) -> dict:
        """{key: measured value} of the limits that `measured` ({key: value}) exceeds."""
        return {key: measured[key] for key, limit in self.limits if measured[key] > limit}


_SUFFIX = {"k": 1e3, "m": 1e6, "g": 1e9, "kb": 1024, "mb": 1024 ** 2, "b": 1}


def _parse_amount(text: str, key: str) -> float:
    raw = text.strip().lower()
    digits = raw.rstrip("abcdefghijklmnopqrstuvwxyz")
    suffix = raw[len(digits):]
    try:
        number = float(digits)
    except ValueError:
        raise ValueError(f"target {key}: cannot read a number in {text!r}") from None
    if suffix and suffix not in _SUFFIX:
        raise ValueError(f"target {key}: unknown unit {suffix!r} (use k, M, G, kB, MB)")
    value = number * _SUFFIX.get(suffix, 1)
    if key == "int8_kb" and suffix in ("kb", "mb", "b"):
        value /= 1024  # int8_kb is counted in kB
    if value <= 0:
        raise ValueError(f"target {key} must be positive, got {text!r}")
    return value


def measure(model, key: str) -> float:
    """The budgeted quantity of `model` (int8_kb from the int8 weight bytes, peak_ram in bytes)."""
    return profiled(model)[key]


def profiled(model) -> dict:
    """Every budgeted quantity of `model` from the profiler: {key: value} over TARGET_KEYS."""
    stats = kerasnets.profile(model)
    return {"params": stats["params"], "macs": stats["macs"],
            "int8_kb": stats["weights_int8_bytes"] / 1024,
            "peak_ram": stats["peak_activation_bytes"]}


def prune_to_target(model, pruner: Callable, target: Target, *, max_ratio=0.95,
                    steps=12, measured: Callable = profiled) -> tuple[keras.Model, float]:
    """The least-pruned model `pruner(ratio)` (bisection on the ratio) that meets every limit of
    `target`; returns it and the ratio it took. `measured(model)` gives {key: value} (the
    profiler's estimate by default; a caller may measure the converted model instead). Raises
    ValueError when even `max_ratio` cannot meet it."""
    if not target.missed(measured(model)):
        return model, 0.0
    best = pruner(max_ratio)
    missed = target.missed(measured(best))
    if missed:
        left = ", ".join(f"{key} {value:g}" for key, value in missed.items())
        raise ValueError(f"target {target} is out of reach: pruning {max_ratio:.0%} of the prunable "
                         f"channels leaves {left} (the fixed channels and unprunable layers set the floor)")
    low, high = 0.0, max_ratio
    for _ in range(steps):
        mid = (low + high) / 2
        candidate = pruner(mid)
        if not target.missed(measured(candidate)):
            best, high = candidate, mid
        else:
            low = mid
    return best, high


def ratio_or_target(model, pruner: Callable, ratio: float | None, target: Target | None):
    """(pruned model, ratio used): `pruner(ratio)`, or the least pruning that meets `target`."""
    if target is not None:
        return prune_to_target(model, pruner, target)
    return pruner(ratio), ratio
