"""Network Slimming (Liu et al., arXiv 1708.06519): L1 on BatchNorm scales, then a global cut.

Training with an L1 penalty on every BatchNorm gamma drives unimportant channels' scales toward
zero; channels are then ranked by |gamma| across the whole network (one global threshold),
pruned, and the smaller model fine-tuned. `passes > 1` repeats penalise-prune-fine-tune.
"""
from __future__ import annotations

import os

import tf_keras as keras

from kerasnets.pipelines import train
from kerasnets.pipelines.prune import surgery
from kerasnets.pipelines.prune.graph import ChannelGraph, analyse
from kerasnets.pipelines.prune.structured import batchnorm_scores, check_ratio, select

L = keras.layers


def scores(graph: ChannelGraph, context=None) -> dict:
    return batchnorm_scores(graph, lambda gamma, beta: abs(gamma))


def with_gamma_penalty(model: keras.Model, strength: float) -> keras.Model:
    """Copy of `model` (same weights) with an L1 regulariser of `strength` on every BN gamma."""
    if strength < 0:
        raise ValueError(f"sparsity strength must be >= 0, got {strength}")

    def clone(layer):
        config = layer.get_config()
        if isinstance(layer, L.BatchNormalization) and layer.scale:
            config["gamma_regularizer"] = keras.regularizers.L1(strength) if strength else None
        return layer.__class__.from_config(config)

    penalised = keras.models.clone_model(model, clone_function=clone)
    penalised.set_weights(model.get_weights())
    return penalised


def slim(model: keras.Model, data, out_dir: str, *, ratio: float, epochs: int, strength: float = 1e-4,
         finetune_epochs: int | None = None, passes: int = 1, config: dict | None = None,
         verbose: int = 0) -> tuple[keras.Model, list]:
    """Sparsity training, global |gamma| pruning of `ratio` of the prunable channels (split over
    `passes`), fine-tuning; returns the smaller model and one history per training run."""
    check_ratio(ratio)
    if passes < 1:
        raise ValueError(f"passes must be >= 1, got {passes}")
    finetune_epochs = epochs if finetune_epochs is None else finetune_epochs
    per_pass = 1.0 - (1.0 - ratio) ** (1.0 / passes)  # the same share of what is left each pass
    histories = []
    for step in range(passes):
        sparse = with_gamma_penalty(model, strength)
        run = train.fit(lambda: sparse, data, os.path.join(out_dir, f"pass{step}-sparsity"),
                        config={**(config or {}), "epochs": epochs}, verbose=verbose)
        histories.append(run["history"])
        trained = with_gamma_penalty(run["model"], 0.0)
        graph = analyse(trained)
        model = surgery.prune_channels(trained, select(graph, scores(graph), per_pass, scope="global"),
                                       graph=graph)
        if finetune_epochs:
            pruned = model
            run = train.fit(lambda: pruned, data, os.path.join(out_dir, f"pass{step}-finetune"),
                            config={**(config or {}), "epochs": finetune_epochs}, verbose=verbose)
            histories.append(run["history"])
            model = run["model"]
    return model, histories


def apply(model, request, context):
    """The registered entry (see `criteria`): `slim` at the request's ratio (default 0.5) with
    `max(epochs, 1)` sparsity epochs and `epochs` of fine-tuning."""
    result, _ = slim(model, context.data, context.out_dir, ratio=request.ratio or 0.5,
                     epochs=max(request.epochs, 1),
                     strength=context.strength or 1e-4, finetune_epochs=request.epochs,
                     config=context.config)
    return result, request.ratio
