"""Compression: TFMOT sparsity and clustering, and structured channel pruning that shrinks the graph.

`compress(model, method, ratio=... | target=..., data=..., epochs=...)` is the one entry point
(`kerasnets compress` calls it). Structured methods return a physically smaller functional model;
the TFMOT sparsity methods return a same-shape model with zeroed weights (stripped of wrappers).
Each method is one registered `Criterion` (see `criteria`); `methods()` lists them with a
description, and METHODS, STRUCTURED, SPARSITY, NEEDS_DATA and TARGETABLE are read from the
registry when asked for, so a criterion registered later appears in them.
"""
from __future__ import annotations

import os
import tempfile

import tf_keras as keras

import kerasnets
from kerasnets.pipelines.prune import criteria
from kerasnets.pipelines.prune.criteria import (STRATEGIES, Context, Criterion, Request, methods,
                                                register_criterion, unregister_criterion)
from kerasnets.pipelines.prune.graph import ChannelGraph, UnsupportedLayerError, analyse
from kerasnets.pipelines.prune.handlers import Handler, register_handler, unregister_handler
from kerasnets.pipelines.prune.structured import Target, prune_by_scores, prune_to_target, select
from kerasnets.pipelines.prune.surgery import mask_channels, prune_channels

__all__ = ["compress", "analyse", "prune_channels", "mask_channels", "select", "prune_by_scores",
           "prune_to_target", "Target", "ChannelGraph", "UnsupportedLayerError", "METHODS",
           "STRUCTURED", "SPARSITY", "NEEDS_DATA", "TARGETABLE", "STRATEGIES", "Request",
           "Criterion", "Context", "register_criterion", "unregister_criterion", "methods",
           "Handler", "register_handler", "unregister_handler"]

# name -> the registry query it stands for, answered when the name is read (PEP 562)
_DERIVED = {"METHODS": {}, "STRUCTURED": {"kind": "structured"}, "SPARSITY": {"kind": "sparsity"},
            "NEEDS_DATA": {"needs_data": True}, "TARGETABLE": {"targetable": True}}


def __getattr__(name):
    if name in _DERIVED:
        return criteria.names(**_DERIVED[name])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _train(model, data, out_dir, epochs, config):
    from kerasnets.pipelines import train

    return train.fit(lambda: model, data, out_dir, config={**(config or {}), "epochs": epochs},
                     verbose=0)["model"]


def _channel_graph(model):
    graph = analyse(model)
    if not graph.channels:
        raise ValueError(f"{model.name} has no prunable channels: every channel reaches a "
                         "reshape, slice, unevenly split groups or the model's output")
    return graph


def _summary(model, result, before, request, used) -> dict:
    after = kerasnets.profile(result)
    target = request.target
    return {"model": model.name, "method": request.method, "ratio": used,
            "target": None if target is None else str(target),
            "params_before": before["params"], "params_after": after["params"],
            "macs_before": before["macs"], "macs_after": after["macs"],
            "peak_ram_before": before["peak_activation_bytes"],
            "peak_ram_after": after["peak_activation_bytes"], "epochs": request.epochs,
            "strategy": request.strategy}


def compress(model: keras.Model, method: str, *, ratio=None, target=None, data=None, epochs: int = 0,
             strategy: str = "finetune", out_dir: str | None = None, config: dict | None = None,
             strength: float | None = None) -> tuple[keras.Model, dict]:
    """Compress `model` with `method`; returns (model, summary with before/after params and MACs).

    `data` (a pipelines.data.ImageData) is needed by the methods in NEEDS_DATA and by any
    fine-tuning (`epochs > 0`); `strategy="scratch"` re-initialises the pruned architecture and
    trains it from scratch for `epochs` instead of fine-tuning the surviving weights.
    """
    request = Request(method, ratio, target, int(epochs), strategy)
    criterion = request.criterion
    if data is None and (criterion.needs_data or request.epochs):
        raise ValueError(f"{method} with epochs={request.epochs} needs training data: pass `data` "
                         "(a pipelines.data.ImageData)")
    work = out_dir or tempfile.mkdtemp(prefix=f"compress-{method}-")
    before = kerasnets.profile(model)
    context = Context(data=data, out_dir=work, config=config, strength=strength,
                      graph=_channel_graph(model) if criterion.kind == "structured" else None)
    result, used = criterion.run(model, request, context)
    if request.epochs and not criterion.trains:
        if strategy == "scratch":
            result = keras.models.clone_model(result)  # same architecture, fresh initialisation
        result = _train(result, data, os.path.join(work, strategy), request.epochs, config)
    return result, _summary(model, result, before, request, used)
