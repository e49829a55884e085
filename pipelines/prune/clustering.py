"""Weight clustering (`tfmot.clustering.keras`: each kernel keeps at most N distinct values) and
collaborative optimisation, TFMOT's QAT that keeps what pruning or clustering made: PQAT keeps the
zeros, CQAT the clusters, PCQAT both.

Flow: `cluster` a trained (possibly pruned and stripped) model, fine-tune it, `strip`; then
`pqat` / `cqat` / `pcqat` give a QAT model (the zoo's custom layers annotated as in
`pipelines.quantize`) to fine-tune and export; a CQAT/PCQAT model goes through `strip_cqat` before
export.
"""
from __future__ import annotations

import logging

import numpy as np
import tensorflow_model_optimization as tfmot
import tf_keras as keras
# TFMOT's table of which weights of which built-in layers it clusters (pinned TFMOT 0.8.1).
from tensorflow_model_optimization.python.core.clustering.keras.clustering_registry import (
    ClusteringRegistry)
from tensorflow_model_optimization.python.core.clustering.keras.cluster_wrapper import ClusterWeights
# cluster_weights with preserve_sparsity, as TFMOT's sparsity-preserving clustering guide imports it.
from tensorflow_model_optimization.python.core.clustering.keras.experimental import (
    cluster as _experimental)

from kerasnets.pipelines import quantize
from kerasnets.pipelines.prune.sparsity import (PruneLowMagnitude, _check_model, _flat_layers, _inner,
                                                weight_variable, wrap_copy)

_C = tfmot.clustering.keras
_COMBINE = tfmot.experimental.combine
log = logging.getLogger("kerasnets.prune")

INITS = {
    "kmeans++": _C.CentroidInitialization.KMEANS_PLUS_PLUS,
    "linear": _C.CentroidInitialization.LINEAR,
    "density": _C.CentroidInitialization.DENSITY_BASED,
    "random": _C.CentroidInitialization.RANDOM,
}


def _clusterable_weights(layer, holder=None) -> list:
    """The kernels TFMOT clusters in `layer`: Conv/Dense kernels of its registry (exact classes;
    DepthwiseConv2D kernels are not clustered), or those a `ClusterableLayer` declares. `holder`:
    the (QAT) wrapper around `layer`, if any."""
    if isinstance(layer, _C.ClusterableLayer):
        return [weight for _, weight in layer.get_clusterable_weights()]
    names = ClusteringRegistry._LAYERS_WEIGHTS_MAP.get(type(layer), [])
    return [w for w in (weight_variable(layer, name, holder) for name in names) if w is not None]


def cluster(model: keras.Model, *, clusters: int = 16, init: str = "kmeans++",
            per_channel: bool = False, preserve_sparsity: bool = False, exclude=()) -> keras.Model:
    """`model` with TFMOT's clustering wrapper on every Conv2D/Dense kernel: during fine-tuning each
    kernel is pulled to `clusters` shared values (per output channel with `per_channel=True`, which
    suits per-channel int8 QAT afterwards). `init`: centroid initialisation, one of
    kmeans++ | linear | density | random. `preserve_sparsity=True` keeps a pruned model's zeros
    (sparsity-preserving clustering). Kernels with no more weights than clusters, the zoo's custom
    layers, depthwise kernels and layers named in `exclude` are left as they are. Built on a copy
    of `model`; fine-tune it with an ordinary `fit`, then `strip`."""
    _check_model(model, "cluster")
    if isinstance(clusters, bool) or not isinstance(clusters, (int, np.integer)) or clusters < 2:
        raise ValueError(f"clusters must be an integer >= 2 (distinct values per kernel; 16 ~ 4-bit "
                         f"indices), got {clusters!r}")
    if init not in INITS:
        raise ValueError(f"init must be one of {', '.join(INITS)}, got {init!r}")
    names = {layer.name for layer in _flat_layers(model)}
    unknown = sorted(set(exclude) - names)
    if unknown:
        raise ValueError(f"exclude names layers {unknown} that {model.name!r} does not have")
    wrapped = []

    def wrap(fresh, original):
        weights = _clusterable_weights(original)
        if not weights or original.name in exclude:
            return fresh
        channels = weights[0].shape[-1] if per_channel and isinstance(original, keras.layers.Conv2D) else 1
        if any(int(np.prod(w.shape)) // channels <= clusters for w in weights):
            return fresh  # nothing to share: the kernel already has at most `clusters` values
        wrapped.append(original.name)
        fresh.build(original.input_shape)  # the wrapper sets its centroids from the weights it finds
        fresh.set_weights(original.get_weights())
        return _experimental.cluster_weights(
            fresh, number_of_clusters=int(clusters), cluster_centroids_init=INITS[init],
            preserve_sparsity=bool(preserve_sparsity), cluster_per_channel=bool(per_channel))

    clustered = wrap_copy(model, wrap)
    if not wrapped:
        raise ValueError(f"{model.name!r} has no Conv2D/Dense kernel with more than {clusters} weights "
                         f"to cluster{' outside exclude' if exclude else ''}")
    log.info("clustering %d layers of %s to %d values", len(wrapped), model.name, clusters)
    return clustered


def strip(model: keras.Model) -> keras.Model:
    """The model without clustering wrappers: plain layers holding the clustered kernels."""
    _check_model(model, "strip")
    return _C.strip_clustering(model)


# CQAT's centroid updates leave copies of one centroid a float ulp apart: values closer than this
# fraction of the kernel's largest magnitude count as one (int8 maps them to one value anyway).
_ROUNDOFF = 1e-6


def _distinct(values: np.ndarray, tolerance: float) -> int:
    ordered = np.sort(values.ravel())
    return int(1 + np.count_nonzero(np.diff(ordered) > tolerance)) if ordered.size else 0


def unique_weights_report(model: keras.Model) -> dict:
    """Distinct values in each Conv/Dense kernel TFMOT clusters (stripped, cluster-wrapped or QAT
    models): {"layers": {name: count}, "max": largest count, "per_channel": {name: largest count
    within one output channel}, "max_per_channel": ...}. Clustering bounds the count per kernel;
    CQAT trains each output channel's centroids apart (as int8 conv kernels are quantised per
    channel), so after CQAT only the per-channel count stays bounded. Values within 1e-6 of the
    kernel's largest magnitude count as one."""
    _check_model(model, "unique_weights_report")
    if any(isinstance(layer, ClusterWeights) for layer in _flat_layers(model)):
        model = strip(model)  # the wrapper rebuilds the kernel from its centroids at each call
    counts, per_channel = {}, {}
    for layer in _flat_layers(model):
        for weight in _clusterable_weights(_inner(layer), layer):
            kernel = weight.numpy()
            tolerance = _ROUNDOFF * float(np.abs(kernel).max())
            channels = kernel.reshape(-1, kernel.shape[-1])
            counts[layer.name] = max(counts.get(layer.name, 0), _distinct(kernel, tolerance))
            per_channel[layer.name] = max(per_channel.get(layer.name, 0),
                                          max(_distinct(channels[:, c], tolerance)
                                              for c in range(channels.shape[1])))
    if not counts:
        raise ValueError(f"{model.name!r} has no Conv2D/Dense kernel to report on")
    return {"layers": counts, "max": max(counts.values()), "per_channel": per_channel,
            "max_per_channel": max(per_channel.values())}


def _collaborative_qat(model, scheme, what):
    _check_model(model, what)
    wrapped = [layer.name for layer in _flat_layers(model)
               if isinstance(layer, (ClusterWeights, PruneLowMagnitude))]
    if wrapped:
        raise ValueError(f"{what} needs a stripped model, but {model.name!r} still holds pruning or "
                         f"clustering wrappers ({', '.join(wrapped[:3])} ...): pass it through "
                         "sparsity.strip / clustering.strip first")
    return quantize.quantize_model(model, scheme=scheme)


def pqat(model: keras.Model) -> keras.Model:
    """Sparsity-preserving 8-bit QAT (PQAT) of a pruned, stripped model: the zero weights stay zero
    through QAT, so the int8 model keeps the sparsity (TFMOT's
    Default8BitPrunePreserveQuantizeScheme)."""
    return _collaborative_qat(model, _COMBINE.Default8BitPrunePreserveQuantizeScheme(), "pqat")


def cqat(model: keras.Model) -> keras.Model:
    """Cluster-preserving 8-bit QAT (CQAT) of a clustered, stripped model: the assignment of weights
    to clusters stays and the centroids train — per output channel for Conv2D kernels, so each
    channel keeps at most N values (see `unique_weights_report`). Pass the trained model through
    `strip_cqat` before export."""
    scheme = _COMBINE.Default8BitClusterPreserveQuantizeScheme(preserve_sparsity=False)
    return _collaborative_qat(model, scheme, "cqat")


def pcqat(model: keras.Model) -> keras.Model:
    """Sparsity- and cluster-preserving 8-bit QAT (PCQAT) of a pruned, then sparsity-preserving
    clustered (`cluster(..., preserve_sparsity=True)`), stripped model. `strip_cqat` before export."""
    scheme = _COMBINE.Default8BitClusterPreserveQuantizeScheme(preserve_sparsity=True)
    return _collaborative_qat(model, scheme, "pcqat")


def strip_cqat(model: keras.Model) -> keras.Model:
    """A CQAT/PCQAT model without its training-only variables (centroids, cluster indices, original
    weights): the QAT model that `convert.export` takes, its kernels holding the clustered values."""
    _check_model(model, "strip_cqat")
    with quantize.quantize_scope():  # the stripped copy is rebuilt from the config
        return _COMBINE.strip_clustering_cqat(model)
