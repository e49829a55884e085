"""Model profiler: params, MACs per layer, int8 weight bytes and peak activation memory.

MACs count multiply-accumulates of Conv2D / DepthwiseConv2D / Dense layers (the convention of
the papers' tables). Peak activation memory walks the functional graph in execution order,
keeping each tensor alive from its producer to its last consumer, as TFLite Micro's planner
does; layers TFLite fuses into the op before them (BatchNorm, activations, Dropout) or that
only reinterpret a buffer (Reshape, Flatten) share their input's buffer instead of adding one.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import tf_keras as keras


def _layers():
    """tf_keras.layers, imported on first use: `import kerasnets` does not load TensorFlow (the
    command line sets TensorFlow's log levels first)."""
    import tf_keras

    return tf_keras.layers


def _aliasing():
    L = _layers()
    return (L.BatchNormalization, L.ReLU, L.Activation, L.Dropout, L.Reshape, L.Flatten,
            L.SpatialDropout2D)


def _numel(shape) -> int:
    return int(np.prod([d for d in shape if d is not None], dtype=np.int64)) if shape else 1


def _output_shape(layer):
    shape = layer.output.shape
    return tuple(shape[1:])


def _call_macs(layer, node) -> int:
    L = _layers()
    outputs = _numel(tuple(node.output_shapes)[1:])
    if isinstance(layer, L.DepthwiseConv2D):
        kh, kw = layer.kernel_size
        return outputs * kh * kw
    if isinstance(layer, L.Conv2D):
        kh, kw = layer.kernel_size
        # an IndexedGroupConv's groups read its index, not its whole input
        channels = len(getattr(layer, "indices", ())) or tuple(node.input_shapes)[-1]
        return outputs * kh * kw * (channels // layer.groups)
    if isinstance(layer, L.Dense):
        return int(layer.kernel.shape[0]) * outputs
    return 0


def _layer_macs(model, layer) -> int:
    """MACs of every call of the layer within `model` (a layer shared across calls, as in MGiaD,
    counts each; calls from other models built on the same layer objects do not count)."""
    return sum(_call_macs(layer, node) for i, node in enumerate(layer.inbound_nodes)
               if f"{layer.name}_ib-{i}" in model._network_nodes)


def _layer_weight_int8_bytes(layer) -> int:
    """int8 kernel bytes plus an int32 bias per output channel (BatchNorm folds into it)."""
    L = _layers()
    if isinstance(layer, L.DepthwiseConv2D):
        kernel = layer.depthwise_kernel
    elif isinstance(layer, (L.Conv2D, L.Dense)):
        kernel = layer.kernel
    else:
        return 0
    return _numel(kernel.shape) + 4 * int(layer.output.shape[-1])


def _own_node(model, layer):
    """The call of `layer` that belongs to `model` (a layer reused in several models, as TFMOT's
    strip or a clone does, has nodes in each)."""
    for i, node in enumerate(layer.inbound_nodes):
        if f"{layer.name}_ib-{i}" in model._network_nodes:
            return node
    return layer.inbound_nodes[0]


def _inbound_layers(model, layer) -> list:
    node = _own_node(model, layer)
    inbound = node.inbound_layers
    return list(inbound) if isinstance(inbound, (list, tuple)) else [inbound]


def _buffers(model):
    """Activation buffers in execution order: ({owner layer id: int8 bytes}, {owner: last step},
    {layer id: step}); layers that only alias their input (reshape-like) share its buffer."""
    layers = model.layers
    index = {id(layer): i for i, layer in enumerate(layers)}
    buffer_of = {}  # layer -> id of the layer that owns its output buffer
    size = {}
    last_use = {}
    input_layer, aliasing = _layers().InputLayer, _aliasing()
    for i, layer in enumerate(layers):
        inbound = [] if isinstance(layer, input_layer) else _inbound_layers(model, layer)
        for src in inbound:
            owner = buffer_of[id(src)]
            last_use[owner] = max(last_use.get(owner, index[owner]), i)
        if isinstance(layer, aliasing) and len(inbound) == 1:
            buffer_of[id(layer)] = buffer_of[id(inbound[0])]
        else:
            buffer_of[id(layer)] = id(layer)
            size[id(layer)] = _numel(_output_shape(layer))
    for out in model.outputs:  # outputs live to the end
        owner = buffer_of[id(out.node.layer)]
        last_use[owner] = len(layers)
    return size, last_use, index


def _live(size, last_use, index, step):
    return [owner for owner in size if index[owner] <= step <= last_use.get(owner, index[owner])]


def _live_bytes_per_step(model, size, last_use, index) -> list[int]:
    return [sum(size[o] for o in _live(size, last_use, index, i)) for i in range(len(model.layers))]


def _peak_activation(model) -> tuple[int, list[int]]:
    """Peak int8 bytes of live activations (batch 1) and the live bytes at each layer."""
    live_per_layer = _live_bytes_per_step(model, *_buffers(model))
    return max(live_per_layer), live_per_layer


def peak_live_layers(model: keras.Model) -> list[str]:
    """Names of the layers whose output buffers are live when activation memory peaks."""
    size, last_use, index = _buffers(model)
    live_per_layer = _live_bytes_per_step(model, size, last_use, index)
    step = int(max(range(len(live_per_layer)), key=live_per_layer.__getitem__))
    by_id = {id(layer): layer.name for layer in model.layers}
    return [by_id[owner] for owner in _live(size, last_use, index, step)]


def profile(model: keras.Model) -> dict:
    """Profile a built functional model at its input shape (batch 1).

    Returns params (trainable/total), macs, float32 and int8 weight bytes, peak int8 activation
    bytes, and `layers`: one row per layer (name, type, output shape, params, macs, live bytes).
    """
    import tf_keras as keras

    if not isinstance(model, keras.Model) or not getattr(model, "_is_graph_network", False):
        raise TypeError(f"profile() needs a functional tf_keras Model, got {type(model).__name__}")
    peak, live = _peak_activation(model)
    rows = []
    for layer, live_bytes in zip(model.layers, live):
        rows.append({
            "name": layer.name,
            "type": type(layer).__name__,
            "output_shape": list(_output_shape(layer)),
            "params": int(layer.count_params()),
            "macs": _layer_macs(model, layer),
            "weights_int8_bytes": _layer_weight_int8_bytes(layer),
            "live_activation_bytes": live_bytes,
        })
    trainable = int(sum(_numel(w.shape) for w in model.trainable_weights))
    total = int(model.count_params())
    return {
        "name": model.name,
        "input_shape": list(model.input_shape[1:]),
        "params": trainable,
        "params_total": total,
        "macs": int(sum(r["macs"] for r in rows)),
        "weights_float32_bytes": 4 * total,
        "weights_int8_bytes": int(sum(r["weights_int8_bytes"] for r in rows)),
        "peak_activation_bytes": int(peak),
        "layers": rows,
    }
