"""Compression: TFMOT sparsity and clustering, and structured channel pruning that shrinks the graph.

`compress(model, method, ratio=... | target=..., data=..., epochs=...)` is the one entry point
(`kerasnets compress` calls it). Structured methods return a physically smaller functional model;
the TFMOT sparsity methods return a same-shape model with zeroed weights (stripped of wrappers).
"""
from __future__ import annotations

import dataclasses
import os
import tempfile

import tf_keras as keras

import kerasnets
from kerasnets.pipelines.prune import bn, complexity, l1, qsfm, slimming, structured, surgery
from kerasnets.pipelines.prune.graph import ChannelGraph, UnsupportedLayerError, analyse
from kerasnets.pipelines.prune.structured import Target, prune_by_scores, prune_to_target, select
from kerasnets.pipelines.prune.surgery import mask_channels, prune_channels

STRUCTURED = ("l1", "bn", "complexity_pa", "complexity_fa", "complexity_ma", "qsfm", "slimming", "scl")
SPARSITY = ("magnitude", "m_by_n")
METHODS = (*SPARSITY, *STRUCTURED)
NEEDS_DATA = ("magnitude", "m_by_n", "qsfm", "slimming", "scl")
STRATEGIES = ("finetune", "scratch")
TARGETABLE = ("l1", "bn", "complexity_pa", "complexity_fa", "complexity_ma", "qsfm")

__all__ = ["compress", "analyse", "prune_channels", "mask_channels", "select", "prune_by_scores",
           "prune_to_target", "Target", "ChannelGraph", "UnsupportedLayerError", "METHODS"]


@dataclasses.dataclass
class Request:
    """What `compress` was asked to do, checked before any work starts."""
    method: str
    ratio: float | None = None
    target: Target | None = None
    epochs: int = 0
    strategy: str = "finetune"

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"unknown compression method {self.method!r}; choose one of {', '.join(METHODS)}")
        if self.method == "scl":
            if self.ratio is not None or self.target is not None:
                raise ValueError("scl learns how many channels to remove: leave out ratio/target and "
                                 "set the connection-count strength instead (--strength, default 0.5)")
        elif (self.ratio is None) == (self.target is None):
            raise ValueError("give exactly one of ratio (fraction of prunable channels/weights to "
                             "remove) or target (e.g. macs=20M, peak_ram=64kB)")
        if self.ratio is not None:
            self.ratio = structured.check_ratio(self.ratio)
        if isinstance(self.target, str):
            self.target = Target.parse(self.target)
        if self.target is not None and self.method not in TARGETABLE:
            raise ValueError(f"{self.method} cannot prune to a target (it keeps the model's shape or "
                             f"learns its own amount); use one of {', '.join(TARGETABLE)}")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")
        if self.epochs < 0:
            raise ValueError(f"epochs must be >= 0, got {self.epochs}")


_DATA_FREE_SCORES = {"l1": l1.scores, "bn": bn.scores}


def _data_free(model, request: Request, graph):
    if request.method.startswith("complexity_"):
        mode = request.method.split("_")[1]
        pruner = lambda ratio: complexity.prune(model, ratio, mode, graph=graph)  # noqa: E731
    else:
        scores = _DATA_FREE_SCORES[request.method](graph)
        pruner = lambda ratio: prune_by_scores(model, scores, ratio, graph=graph)  # noqa: E731
    return _ratio_or_target(model, pruner, request)


def _ratio_or_target(model, pruner, request: Request):
    if request.target is not None:
        return prune_to_target(model, pruner, request.target)
    return pruner(request.ratio), request.ratio


def _train(model, data, out_dir, epochs, config):
    from kerasnets.pipelines import train

    return train.fit(lambda: model, data, out_dir, config={**(config or {}), "epochs": epochs},
                     verbose=0)["model"]


def _qsfm(model, request, graph, data):
    from kerasnets.pipelines.data import representative_images

    images = representative_images(data, 64)
    return _ratio_or_target(model, lambda ratio: qsfm.prune(model, images, ratio, graph=graph), request)


def _sparsity(model, request, data, work, config):
    from kerasnets.pipelines import train
    from kerasnets.pipelines.prune import sparsity

    epochs = max(request.epochs, 1)
    steps = epochs * max(data.num_train // int((config or {}).get("batch_size", 64)), 1)
    options = {"sparsity_m_by_n": (2, 4)} if request.method == "m_by_n" else {}
    # masks update every `frequency` steps: often enough that short fine-tunes reach the target
    wrapped = sparsity.prune_magnitude(model, sparsity=request.ratio, end_step=steps,
                                       frequency=max(1, min(100, steps // 10)), **options)
    run = train.fit(lambda: wrapped, data, work, config={**(config or {}), "epochs": epochs},
                    verbose=0, extra_callbacks=sparsity.callbacks())
    return sparsity.strip(run["model"])


def compress(model: keras.Model, method: str, *, ratio=None, target=None, data=None, epochs: int = 0,
             strategy: str = "finetune", out_dir: str | None = None, config: dict | None = None,
             strength: float | None = None) -> tuple[keras.Model, dict]:
    """Compress `model` with `method`; returns (model, summary with before/after params and MACs).

    `data` (a pipelines.data.ImageData) is needed by the methods in NEEDS_DATA and by any
    fine-tuning (`epochs > 0`); `strategy="scratch"` re-initialises the pruned architecture and
    trains it from scratch for `epochs` instead of fine-tuning the surviving weights.
    """
    request = Request(method, ratio, target, int(epochs), strategy)
    if data is None and (method in NEEDS_DATA or request.epochs):
        raise ValueError(f"{method} with epochs={request.epochs} needs training data: pass data "
                         "(--dataset digits | cifar10 | imagefolder:PATH)")
    work = out_dir or tempfile.mkdtemp(prefix=f"compress-{method}-")
    before = kerasnets.profile(model)
    trained_already = False
    if method in SPARSITY:
        result, used = _sparsity(model, request, data, os.path.join(work, "sparsity"), config), request.ratio
        trained_already = True
    else:
        graph = analyse(model)
        if not graph.channels:
            raise ValueError(f"{model.name} has no prunable channels: every channel reaches a "
                             "reshape, slice, grouped conv or the model's output")
        if method == "qsfm":
            result, used = _qsfm(model, request, graph, data)
        elif method == "slimming":
            result, _ = slimming.slim(model, data, work, ratio=request.ratio or 0.5,
                                      epochs=max(request.epochs, 1), strength=strength or 1e-4,
                                      finetune_epochs=request.epochs, config=config)
            used, trained_already = request.ratio, True
        elif method == "scl":
            from kerasnets.pipelines.prune import scl

            result, _ = scl.train(model, data, work, epochs=max(request.epochs, 1),
                                  strength=0.5 if strength is None else strength, config=config,
                                  verbose=0)
            used, trained_already = None, True
        else:
            result, used = _data_free(model, request, graph)
    if request.epochs and not trained_already:
        if strategy == "scratch":
            result = keras.models.clone_model(result)  # same architecture, fresh initialisation
        result = _train(result, data, os.path.join(work, strategy), request.epochs, config)
    after = kerasnets.profile(result)
    summary = {"model": model.name, "method": method, "ratio": used,
               "target": None if request.target is None else f"{request.target.key}={request.target.value:g}",
               "params_before": before["params"], "params_after": after["params"],
               "macs_before": before["macs"], "macs_after": after["macs"],
               "peak_ram_before": before["peak_activation_bytes"],
               "peak_ram_after": after["peak_activation_bytes"], "epochs": request.epochs,
               "strategy": strategy}
    return result, summary
