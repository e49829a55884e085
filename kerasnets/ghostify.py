"""ghostify: rebuild a functional model with its convolutions replaced by C-Ghost modules.

The C-Ghost module (Han et al., CVPR 2020, arXiv 1911.11907; `blocks.ghost_module`) replaces a
conv-BN(-activation) unit: a primary conv with the original kernel and stride makes
ceil(filters / ratio) intrinsic maps (BN, activation), a dw_kernel x dw_kernel depthwise conv
makes the rest (BN, activation), and the two are concatenated (and cut) to the original width.
Parameters and MACs of a replaced unit drop by about `ratio`.

`ghostify` walks the model's functional graph (each layer's call node and the tensors it
consumed) from the inputs to the outputs and rebuilds it. A replaced unit is the conv, the
BatchNormalization that alone consumes its output and, when it alone consumes the BN's output,
a ReLU, ReLU6 or hard-swish, which moves inside the module as the paper's ReLU does. Every
other layer is copied with its weights; the Ghost modules start freshly initialised.

By default every eligible Conv2D is replaced (the stem included, as the paper does for VGG and
ResNet). Kept unchanged, and named with the reason by `ghost_plan`:

- depthwise, separable and grouped convs: already cheap, and the cheap operation is itself one;
- convs not followed by their own BatchNormalization (classifier and squeeze-excite convs with
  bias): the module's BN would change what they compute;
- convs on 1x1 maps (pooled features): a depthwise conv there is only a per-channel scale;
- dilated convs, and kxk convs with 'valid' padding: the module pads 'same' without dilation;
- 1x1 convs with stride > 1 (projection shortcuts): they stand in for parameter-free shortcuts
  and carry no spatial features for a cheap operation to copy;
- convs with fewer than `min_filters` filters;
- convs the model calls more than once (shared weights), which stay shared.

`layers=[names]` replaces only the named convs and may name a projection shortcut or a narrow
conv; naming a layer that cannot be replaced raises a ValueError with the reason. The modules'
BatchNorms use the package defaults (epsilon 1e-5, momentum 0.9), and their convs the default
initialiser without regulariser, whatever the replaced layers had.
"""
from __future__ import annotations

import collections
import collections.abc
import dataclasses
import difflib

import tensorflow as tf
import tf_keras as keras

from kerasnets import blocks
from kerasnets import layers as knl

L = keras.layers
MIN_FILTERS = 16
REPLACE = "replace"


@dataclasses.dataclass(frozen=True)
class _Unit:
    """A conv-BN(-activation) unit to rebuild as a Ghost module."""

    conv_node: object
    absorbed: tuple  # the BN node and, if folded, the activation node
    output: object  # the old tensor the module's output stands for
    act: str | None
    name: str


# --- the functional graph -------------------------------------------------------------------

def _check_model(model):
    if not isinstance(model, keras.Model) or not getattr(model, "_is_graph_network", False):
        raise TypeError(f"ghostify needs a functional tf_keras Model, got {type(model).__name__}")


def _nodes_in_order(model) -> list:
    """The call nodes of the model, every producer before its consumers (iterative DFS)."""
    order, seen = [], set()
    for tensor in [*model.inputs, *model.outputs]:
        stack = [(tensor.node, False)]
        while stack:
            node, finished = stack.pop()
            if finished:
                order.append(node)
                continue
            if id(node) in seen:
                continue
            seen.add(id(node))
            stack.append((node, True))
            stack.extend((parent, False) for parent in reversed(node.parent_nodes)
                         if id(parent) not in seen)
    return order


def _consumers(nodes) -> dict:
    """id(tensor) -> the nodes that consume it."""
    users = {}
    for node in nodes:
        for tensor in node.keras_inputs:
            users.setdefault(id(tensor), []).append(node)
    return users


def _only_output(node):
    outputs = tf.nest.flatten(node.outputs)
    return outputs[0] if len(outputs) == 1 else None


def _sole_consumer(tensor, users, model_outputs, kind):
    """The one node of layer type `kind` consuming `tensor`, else None."""
    nodes = users.get(id(tensor), [])
    if id(tensor) in model_outputs or len(nodes) != 1 or not isinstance(nodes[0].layer, kind):
        return None
    return nodes[0]


# --- which convs qualify --------------------------------------------------------------------

def _activation_kind(layer):
    """The blocks.activation name of a layer that can move into a Ghost module, else None."""
    if isinstance(layer, L.ReLU):
        config = layer.get_config()
        if config["negative_slope"] or config["threshold"]:
            return None
        if config["max_value"] is None:
            return "relu"
        return "relu6" if float(config["max_value"]) == 6.0 else None
    if isinstance(layer, L.Activation):
        return "relu" if layer.get_config()["activation"] == "relu" else None
    if isinstance(layer, knl.HardSwish):
        return "hard_swish"
    return None


def _structural_reason(node, calls):
    """Why a conv call can never become a Ghost module, or None (`calls`: id(layer) -> how
    often the model calls it)."""
    conv = node.layer
    if calls[id(conv)] > 1:
        return "shared layer (called more than once)"
    if isinstance(conv, L.DepthwiseConv2D):
        return "depthwise conv (already a cheap operation)"
    if type(conv) is not L.Conv2D:
        return f"{type(conv).__name__}, not a plain Conv2D"
    if conv.groups != 1:
        return f"grouped conv (groups={conv.groups})"
    if tuple(conv.dilation_rate) != (1, 1):
        return f"dilated conv (dilation {tuple(conv.dilation_rate)}; the Ghost module has none)"
    if conv.padding == "valid" and tuple(conv.kernel_size) != (1, 1):
        return "'valid' padding with a kxk kernel (the Ghost module pads 'same')"
    if conv.get_config()["activation"] != "linear":
        return f"has its own activation {conv.get_config()['activation']!r}"
    if tuple(_only_output(node).shape[1:3]) == (1, 1):
        return "acts on a 1x1 map (pooled features)"
    return None


def _policy_reason(conv, min_filters):
    """Why the default plan keeps a conv that could be replaced, or None."""
    if tuple(conv.kernel_size) == (1, 1) and tuple(conv.strides) != (1, 1):
        return "1x1 strided projection shortcut"
    if conv.filters < min_filters:
        return f"fewer than min_filters={min_filters} filters ({conv.filters})"
    return None


def _unit_name(conv):
    base = conv.name[:-len("_conv")] if conv.name.endswith("_conv") else conv.name
    return f"{base}_ghost"


def _find_unit(node, users, calls, model_outputs):
    """The conv-BN(-activation) unit starting at a conv node, or None without its own BN."""
    bn = _sole_consumer(_only_output(node), users, model_outputs, L.BatchNormalization)
    if bn is None or calls[id(bn.layer)] > 1:
        return None
    absorbed, output, act = (bn,), _only_output(bn), None
    follower = _sole_consumer(output, users, model_outputs, L.Layer)
    if follower is not None and _activation_kind(follower.layer):
        absorbed, output, act = (bn, follower), _only_output(follower), _activation_kind(follower.layer)
    return _Unit(node, absorbed, output, act, _unit_name(node.layer))


def _conv_nodes(nodes):
    return [n for n in nodes if isinstance(n.layer, (L.Conv2D, L.DepthwiseConv2D, L.SeparableConv2D))]


def _check_selection(layers, nodes):
    if layers is None:
        return None
    if isinstance(layers, str) or not isinstance(layers, collections.abc.Iterable):
        raise TypeError(f"layers must be a list of layer names (str), got {layers!r}")
    selected = set(layers)
    if not all(isinstance(name, str) for name in selected):
        raise TypeError(f"layers must be a list of layer names (str), got {layers!r}")
    names = [node.layer.name for node in nodes]
    convs = [node.layer.name for node in _conv_nodes(nodes)]
    for name in sorted(selected):
        if name not in names:
            close = difflib.get_close_matches(name, convs, n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ValueError(f"layers: the model has no layer {name!r}{hint}")
        if name not in convs:
            raise ValueError(f"layers: {name!r} is not a convolution and cannot become a Ghost module")
    return selected


def _plan(model, layers, min_filters):
    """(plan: conv name -> REPLACE or the reason it is kept, units keyed by id(conv node))."""
    nodes = _nodes_in_order(model)
    selected = _check_selection(layers, nodes)
    users = _consumers(nodes)
    calls = collections.Counter(id(node.layer) for node in nodes)
    model_outputs = {id(t) for t in model.outputs}
    plan, units = {}, {}
    for node in _conv_nodes(nodes):
        conv = node.layer
        unit = None
        reason = _structural_reason(node, calls)
        if reason is None:
            unit = _find_unit(node, users, calls, model_outputs)
            reason = None if unit else "not followed by its own BatchNormalization"
        if reason and selected is not None and conv.name in selected:
            raise ValueError(f"layers: {conv.name!r} cannot become a Ghost module: {reason}")
        if reason is None and selected is not None and conv.name not in selected:
            reason = "not selected"
        if reason is None and selected is None:
            reason = _policy_reason(conv, min_filters)
        plan[conv.name] = reason or REPLACE
        if reason is None:
            units[id(node)] = unit
    return plan, units, nodes


def _check_int(name, value, low):
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")


def ghost_plan(model, *, layers=None, min_filters=MIN_FILTERS) -> dict[str, str]:
    """What `ghostify` does to each convolution: conv name -> "replace" or why it is kept."""
    _check_model(model)
    _check_int("min_filters", min_filters, 1)
    return _plan(model, layers, min_filters)[0]


# --- rebuilding ------------------------------------------------------------------------------

def _map_inputs(node, new):
    """The node's call arguments with the old model's tensors swapped for the rebuilt ones."""
    inputs = {id(t) for t in node.keras_inputs}

    def swap(value):
        return new[id(value)] if id(value) in inputs else value

    return tf.nest.map_structure(swap, node.call_args), tf.nest.map_structure(swap, node.call_kwargs)


def _ghost_module(unit, x, ratio, dw_kernel):
    conv = unit.conv_node.layer
    return blocks.ghost_module(x, conv.filters, ratio=ratio, kernel=tuple(conv.kernel_size),
                               dw_kernel=dw_kernel, strides=tuple(conv.strides), act=unit.act,
                               name=unit.name)


def _rebuild(model, nodes, units, ratio, dw_kernel):
    new = {}  # id(old tensor) -> rebuilt tensor
    clones = {}  # id(old layer) -> (old layer, clone): one clone per layer keeps shared layers shared
    absorbed = {id(n) for unit in units.values() for n in unit.absorbed}
    for node in nodes:
        if id(node) in absorbed:
            continue
        if id(node) in units:
            unit = units[id(node)]
            new[id(unit.output)] = _ghost_module(unit, new[id(node.keras_inputs[0])], ratio, dw_kernel)
            continue
        layer = node.layer
        if id(layer) not in clones:
            clones[id(layer)] = (layer, layer.__class__.from_config(layer.get_config()))
        clone = clones[id(layer)][1]
        if node.is_input:
            outputs = clone.output
        else:
            args, kwargs = _map_inputs(node, new)
            outputs = clone(*args, **kwargs)
        for old, rebuilt in zip(tf.nest.flatten(node.outputs), tf.nest.flatten(outputs)):
            new[id(old)] = rebuilt
    inputs = [new[id(t)] for t in model.inputs]
    outputs = [new[id(t)] for t in model.outputs]
    rebuilt = keras.Model(inputs if len(inputs) > 1 else inputs[0],
                          outputs if len(outputs) > 1 else outputs[0], name=f"{model.name}_ghost")
    for old, clone in clones.values():
        clone.set_weights(old.get_weights())
    return rebuilt


def ghostify(model, *, ratio=2, dw_kernel=3, layers=None, min_filters=MIN_FILTERS) -> keras.Model:
    """A copy of functional `model` whose conv-BN(-activation) units are C-Ghost modules.

    ratio: the Ghost s (output channels per intrinsic map); dw_kernel: the cheap depthwise conv's
    kernel d; layers: names of the Conv2D layers to replace (default: every eligible one, see the
    module docstring); min_filters: narrower convs are kept unless named. Kept layers carry their
    weights over; the Ghost modules are newly initialised and need training.
    """
    _check_model(model)
    _check_int("ratio", ratio, 2)
    _check_int("dw_kernel", dw_kernel, 1)
    _check_int("min_filters", min_filters, 1)
    _, units, nodes = _plan(model, layers, min_filters)
    if not units:
        raise ValueError(f"ghostify: no convolution of {model.name!r} qualifies for a Ghost module; "
                         "see ghost_plan(model) for the reasons")
    return _rebuild(model, nodes, units, ratio, dw_kernel)
