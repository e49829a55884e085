"""Walking a functional tf_keras model through its public API: is it functional, its nodes in order.

`nodes_in_order` gives the nodes of a model from its inputs to its outputs in the order tf_keras
itself runs them (deepest first, as the model's own depth map), computed from `model.layers`,
`layer.inbound_nodes` and each node's `keras_inputs` / `outputs` only: a tensor's producer is the
node whose `outputs` hold it. A shared layer contributes one node per call inside the model;
calls made outside the model are never reached from its outputs and are left out.
"""
from __future__ import annotations

import tensorflow as tf
import tf_keras as keras


def is_functional(model) -> bool:
    """True for a tf_keras Model built from input tensors to output tensors (functional, or a
    Sequential that knows its input shape); False for subclassed and unbuilt models."""
    return isinstance(model, keras.Model) and bool(model.inputs) and bool(model.outputs)


def _producers(model) -> dict:
    """id(tensor) -> the node of `model.layers` that outputs it."""
    found = {}
    for layer in model.layers:
        for node in layer.inbound_nodes:
            for tensor in tf.nest.flatten(node.outputs):
                found[id(tensor)] = node
    return found


def _producer(tensor, producers):
    """The node that outputs `tensor`. A built Sequential leaves its InputLayer out of
    `model.layers`, so its input tensor has no entry in `producers`: only the tensor's own
    `_keras_history` (private, the one place read) links it to that layer."""
    node = producers.get(id(tensor))
    if node is None:
        layer, index, _ = tensor._keras_history
        node = layer.inbound_nodes[index]
    return node


def _parents(node, producers) -> list:
    return [_producer(t, producers) for t in tf.nest.flatten(node.keras_inputs)]


def _inputs_first(model, producers) -> list:
    """Nodes reachable from the outputs, each after the nodes it reads (depth-first)."""
    order, done = [], set()

    def visit(node):
        stack = [(node, iter(_parents(node, producers)))]
        while stack:
            current, parents = stack[-1]
            parent = next((p for p in parents if id(p) not in done), None)
            if parent is not None:
                done.add(id(parent))
                stack.append((parent, iter(_parents(parent, producers))))
                continue
            stack.pop()
            order.append(current)

    for tensor in model.outputs:
        node = _producer(tensor, producers)
        if id(node) not in done:
            done.add(id(node))
            visit(node)
    return order


def _depths(model, producers) -> dict:
    """node -> depth (0 at the outputs), a shared layer's calls all at its deepest one's depth;
    insertion order as tf_keras builds its own map, so ties keep tf_keras' order."""
    depths: dict = {}
    layer_depths: dict = {}
    for node in reversed(_inputs_first(model, producers)):
        depth = max(depths.setdefault(node, 0), layer_depths.get(id(node.layer), 0))
        layer_depths[id(node.layer)] = depths[node] = depth
        for parent in _parents(node, producers):
            depths[parent] = max(depth + 1, depths.get(parent, 0))
    for tensor in model.inputs:  # inputs no output depends on still belong to the model
        node = _producer(tensor, producers)
        if id(node.layer) not in layer_depths:
            layer_depths[id(node.layer)] = 0
            depths[node] = 0
    return depths


def nodes_in_order(model: keras.Model) -> list:
    """Every node of functional `model`, inputs first (the order tf_keras runs them)."""
    producers = _producers(model)
    by_depth: dict = {}
    for node, depth in _depths(model, producers).items():
        by_depth.setdefault(depth, []).append(node)
    return [node for depth in sorted(by_depth, reverse=True) for node in by_depth[depth]]
