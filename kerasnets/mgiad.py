"""MGiaD: multigrid in all dimensions (van Betteray, Rottmann, Kahl, arXiv 2211.05525).

Multigrid structure in resolution, depth and channels:

- resolution and depth: MgNet (He & Xu, arXiv 1901.10415). Each resolution level l carries a
  data tensor f and a feature tensor u and runs nu smoothing steps

      u <- u + relu(B_{l,i}(relu(f - A_l(u))))

  with one operator A_l shared by every step of the level (the weight sharing). Going to the next
  level, u <- Pi(u) and f <- R(relu(f - A_l(u))) + A_{l+1}(u), where Pi and R are 3x3 depthwise
  convs of stride 2 with channel multiplier c_{l+1} / c_l, as in the authors' MgNet code
  (github.com/vanbetteray/Poly-MgNet, models/mgnet_poly.py). The first step of a level takes
  its residual f - A(u) as what it is, the restricted residual, instead of recomputing A(u).
  The classifier reads u of the last level; u starts at zero, so the first step of level 1 is
  u = relu(B(f)) (f comes out of the stem's ReLU).
- channels: A and B are multilevel-in-channels 3x3 convs (Ephrath et al., arXiv 2006.06799,
  the linear form of MGIC, kerasnets.mgic): a grouped conv (group size g) on the channels plus a
  coarse-channel correction, P(op_coarse(R x)), with R/P grouped 1x1 convs halving/doubling the
  channels and a full conv once fewer than two groups fit. Weights grow linearly with the width.

A shared operator is one set of tf_keras layers called several times; TFLite keeps one filter
tensor for all its CONV_2D ops. MgNet's BatchNorm on the residual f - A(u) is left out (TFMOT's
8-bit QAT quantises a BatchNorm only after a conv); B carries a BatchNorm after each of its convs.

Classifier: kerasnets.blocks.conv_classifier_head (1x1 convs, bit-exact in TFLite Micro).
Figures: the variants register this implementation's params and MACs (every application of a
shared operator counted), not values from the paper's tables, and say so in `source`.
"""
import tf_keras as keras

from kerasnets import blocks, registry
from kerasnets.blocks import check_group_size, check_width, conv_classifier_head, level_groups
from kerasnets.layers import Difference
from kerasnets.registry import Variant

L = keras.layers
PAPER = "arXiv 2211.05525"
DEFAULT_GROUP_SIZE = 16
MEASURED = ("measured on this implementation (MgNet layout from the authors' code, "
            "vanbetteray/Poly-MgNet), not the paper's tables; MACs count every application of "
            "a shared operator")


class MultilevelConv:
    """A multilevel-in-channels conv whose layers are created once and reused on every call:
    op(x) = G(x) + P(op_coarse(R(x))), op = full conv at the coarsest channel level.

    `batch_norm` adds a BatchNorm after each conv (for B; the shared A stays linear)."""

    def __init__(self, channels, *, kernel=3, group_size, batch_norm, name):
        self.name = name
        self.groups = level_groups(channels, group_size)
        self.calls = 0
        self.fine = self._conv(channels, kernel, batch_norm, f"{name}_conv")
        self.coarse = None
        if self.groups > 1:
            self.restrict = L.Conv2D(channels // 2, 1, groups=self.groups, use_bias=False,
                                     name=f"{name}_restrict")
            self.coarse = MultilevelConv(channels // 2, kernel=kernel, group_size=group_size,
                                         batch_norm=batch_norm, name=f"{name}_c")
            self.prolong = self._conv(channels, 1, batch_norm, f"{name}_prolong")

    def _conv(self, channels, kernel, batch_norm, name):
        layers = [L.Conv2D(channels, kernel, padding="same", groups=self.groups, use_bias=False,
                           name=name)]
        if batch_norm:
            layers.append(L.BatchNormalization(epsilon=blocks.BN_EPSILON,
                                               momentum=blocks.BN_MOMENTUM, name=f"{name}_bn"))
        return layers

    @staticmethod
    def _apply(layers, x):
        for layer in layers:
            x = layer(x)
        return x

    def __call__(self, x):
        self.calls += 1
        y = self._apply(self.fine, x)
        if self.coarse is None:
            return y
        correction = self._apply(self.prolong, self.coarse(self.restrict(x)))
        return L.Add(name=f"{self.name}_add{self.calls}")([y, correction])


def _residual(f, u, operator, *, name):
    """relu(f - A(u))."""
    return blocks.activation(Difference(name=f"{name}_residual")([f, operator(u)]), "relu",
                             name=f"{name}_relu")


def _smoothing_step(f, u, operator, *, residual=None, group_size, name):
    """u + relu(B(r)) with a fresh B and r = relu(f - A(u)) unless given; u=None is the zero
    start."""
    if residual is None:
        residual = _residual(f, u, operator, name=name)
    smoother = MultilevelConv(f.shape[-1], group_size=group_size, batch_norm=True,
                              name=f"{name}_B")
    update = blocks.activation(smoother(residual), "relu", name=f"{name}_update")
    return update if u is None else L.Add(name=f"{name}_add")([u, update])


def _coarsen(f, u, operator, channels, *, name):
    """To the next level: Pi(u) and R(relu(f - A(u))), both stride-2 depthwise convs."""
    residual = _residual(f, u, operator, name=f"{name}_exit")
    multiplier = channels // f.shape[-1]
    u = L.DepthwiseConv2D(3, strides=2, padding="same", depth_multiplier=multiplier,
                          use_bias=False, name=f"{name}_interpolate")(u)
    restricted = L.DepthwiseConv2D(3, strides=2, padding="same", depth_multiplier=multiplier,
                                   use_bias=False, name=f"{name}_restrict")(residual)
    return restricted, u


def _check_levels(channels):
    for coarse, fine in zip(channels[1:], channels):
        if coarse % fine:
            raise ValueError(f"level widths must each divide the next, got {channels}")


def _mgiad(levels, *, input_shape, classes, include_top, pooling, classifier_activation, name,
           width=1.0, group_size=DEFAULT_GROUP_SIZE) -> keras.Model:
    width, group_size = check_width(width), check_group_size(group_size)
    channels = [int(c * width) for c, _ in levels]
    _check_levels(channels)
    inputs = blocks.model_input(input_shape)
    f = blocks.conv_bn(inputs, channels[0], 3, name="stem")
    u, operator, residual = None, None, f  # u = 0: the first residual is f (already ReLU'd)
    for index, ((_, steps), width_l) in enumerate(zip(levels, channels), start=1):
        level = f"level{index}"
        previous = operator
        operator = MultilevelConv(width_l, group_size=group_size, batch_norm=False,
                                  name=f"{level}_A")
        if u is not None:
            restricted, u = _coarsen(f, u, previous, width_l, name=level)
            f = L.Add(name=f"{level}_data")([restricted, operator(u)])
            # FAS: f - A(u) is the restricted residual itself until u moves
            residual = blocks.activation(restricted, "relu", name=f"{level}_relu")
        for step in range(1, steps + 1):
            u = _smoothing_step(f, u, operator, residual=residual if step == 1 else None,
                                group_size=group_size, name=f"{level}_step{step}")
    outputs = conv_classifier_head(u, include_top=include_top, pooling=pooling, classes=classes,
                                   classifier_activation=classifier_activation)
    return keras.Model(inputs, outputs, name=name)


# MgNet's CIFAR layout in the authors' code: widths per resolution level and smoothing steps.
MGNET_CIFAR = [(64, 2), (128, 2), (256, 2), (256, 2)]

VARIANTS = [  # `width` and `group_size` may be passed
    Variant("mgiad_cifar", dict(levels=MGNET_CIFAR), params=668_490, macs=154.28e6,
            notes="MgNet's CIFAR layout (widths 64-128-256-256, two smoothing steps per "
                  "level), group size 16"),
]

registry.register_variants(_mgiad, VARIANTS, paper=PAPER, input_shape=(32, 32, 3), classes=10,
                           min_size=8, source=MEASURED, figure_source="this implementation",
                           options=("width", "group_size"))
