"""QSFM (arXiv 2105.06052): prune channels whose feature maps repeat others', without fine-tuning.

On a few batches, the feature maps each channel set feeds its consumers are compared by cosine
similarity; the most similar pairs lose their weaker member, and the consumers' weights for it
are folded into the survivor scaled by the least-squares factor a = <f_i, f_j> / <f_i, f_i>, so
the next layer sees nearly the same input and accuracy holds without retraining.
"""
from __future__ import annotations

import numpy as np
import tf_keras as keras

from kerasnets.pipelines.prune import surgery
from kerasnets.pipelines.prune.graph import ChannelGraph, analyse
from kerasnets.pipelines.prune.handlers import handler_for
from kerasnets.pipelines.prune.structured import check_ratio, filter_norms, ratio_or_target

MAX_ROWS = 8192  # feature samples per channel kept for the similarity


def _consumers(model, graph):
    """(layer, input tensor) of every layer that mixes channels it reads."""
    found = []
    for layer in model.layers:
        if handler_for(layer).mixes_inputs(layer) and layer.name in graph.layer_in and len(layer.inbound_nodes) == 1:
            found.append((layer, layer.input))
    return found


def _features(model, tensors, images, seed):
    probe = keras.Model(model.inputs, tensors)
    outputs = probe.predict(images, batch_size=32, verbose=0)
    outputs = outputs if isinstance(outputs, list) else [outputs]
    rng = np.random.default_rng(seed)
    flat = []
    for out in outputs:
        rows = out.reshape(-1, out.shape[-1])
        if len(rows) > MAX_ROWS:
            rows = rows[rng.choice(len(rows), MAX_ROWS, replace=False)]
        flat.append(rows.astype(np.float64))
    return flat


def _pairs_to_remove(features, count):
    """Greedy: (removed column, kept column, scale) for `count` most redundant columns."""
    norms = np.linalg.norm(features, axis=0) + 1e-12
    unit = features / norms
    similarity = np.abs(unit.T @ unit)
    np.fill_diagonal(similarity, -1.0)
    alive = np.ones(len(norms), dtype=bool)
    merges = []
    for _ in range(count):
        masked = np.where(alive[:, None] & alive[None, :], similarity, -1.0)
        i, j = np.unravel_index(np.argmax(masked), masked.shape)
        keep, drop = (i, j) if norms[i] >= norms[j] else (j, i)
        scale = float(features[:, keep] @ features[:, drop] / (norms[keep] ** 2))
        merges.append((drop, keep, scale))
        alive[drop] = False
    return merges


def prune(model: keras.Model, images: np.ndarray, ratio: float, *, graph: ChannelGraph | None = None,
          seed: int = 0) -> keras.Model:
    """Remove `ratio` of each channel set by feature-map redundancy on `images`, compensating
    the consumers; sets no consumer reads directly fall back to the L1 criterion."""
    ratio = check_ratio(ratio)
    graph = graph or analyse(model)
    by_tensor: dict = {}
    for layer, tensor in _consumers(model, graph):
        by_tensor.setdefault(id(tensor), (tensor, []))[1].append(layer)
    tensors = [t for t, _ in by_tensor.values()]
    features = dict(zip([id(t) for t in tensors], _features(model, tensors, images, seed)))
    fallback = filter_norms(graph)
    merges = []  # (removed channel, readers, its kernel row, the survivor's row, scale), in order
    remove = []
    for channel_set in graph.channel_sets():
        parts = graph.even_parts(channel_set)  # a grouped conv's groups lose the same number
        count = min(min(int(ratio * len(part)), len(part) - 1) for part in parts)
        for channels in parts if count > 0 else ():
            source = _read_whole(graph, by_tensor, channels)
            if source is None:
                remove += sorted(channels, key=lambda r: fallback[r])[:count]
                continue
            key, roots, positions, readers = source
            for drop, keep, scale in _pairs_to_remove(features[key][:, positions], count):
                root = int(roots[positions[drop]])
                remove.append(root)
                merges.append((root, readers, positions[drop], positions[keep], scale))
    # channels of different sets can share a grouped conv's groups: even those out first, then
    # fold only the channels that really go (a survivor may itself go later in `merges`)
    remove = graph.balance(remove, rounding="down")
    return _pruned_with(model, _folded(merges, set(remove)), remove, graph)


def _folded(merges, removed: set) -> dict:
    """{layer name: weights} with each removed channel's kernel rows added, scaled, to its twin's."""
    updated: dict = {}
    for root, readers, drop, keep, scale in merges:
        if root not in removed:
            continue
        for layer in readers:
            weights = updated.setdefault(layer.name, layer.get_weights())
            kernel = weights[handler_for(layer).kernel_index]
            kernel[..., keep, :] += scale * kernel[..., drop, :]
    return updated


def _read_whole(graph, by_tensor, channels):
    """A consumed tensor holding each channel of the set exactly once, with its readers."""
    wanted = set(channels)
    for key, (_, readers) in by_tensor.items():
        roots = graph.roots(graph.tensor_ids[key])
        positions = [p for p, r in enumerate(roots) if r in wanted]
        if len(positions) == len(channels) and len(set(roots[positions].tolist())) == len(channels):
            return key, roots, positions, readers
    return None


def _pruned_with(model, updated, remove, graph):
    """prune_channels of `model` carrying the compensated weights, `model` left unchanged."""
    saved = {name: model.get_layer(name).get_weights() for name in updated}
    for name, weights in updated.items():
        model.get_layer(name).set_weights(weights)
    try:
        return surgery.prune_channels(model, remove, graph=graph)
    finally:
        for name, weights in saved.items():
            model.get_layer(name).set_weights(weights)


def apply(model, request, context):
    """The registered entry (see `criteria`): QSFM on 64 representative training images, to the
    request's ratio or target."""
    from kerasnets.pipelines.data import representative_images

    images = representative_images(context.data, 64)
    pruner = lambda ratio: prune(model, images, ratio, graph=context.graph)  # noqa: E731
    return ratio_or_target(model, pruner, request.ratio, request.target)
