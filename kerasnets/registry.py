"""Model registry: builders registered beside their published sizes, looked up by name."""
from __future__ import annotations

import dataclasses
import difflib
import fnmatch
from typing import Callable

_POOLINGS = (None, "avg", "max")


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """What the paper (or its official code) publishes for a registered variant."""

    name: str
    paper: str
    params: float  # trainable parameters at the default input/classes
    macs: float  # multiply-accumulates of conv/dense layers at the default input
    input_shape: tuple[int, int, int]
    classes: int
    min_size: int  # smallest spatial input the downsampling allows
    source: str  # where the figures come from (paper table, official code)
    notes: str = ""

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


_BUILDERS: dict[str, Callable] = {}
_INFOS: dict[str, ModelInfo] = {}


def register_model(*, paper: str, params: float, macs: float, input_shape, classes: int = 1000,
                   min_size: int = 32, source: str = "paper", notes: str = ""):
    """Decorator: register `fn(**kwargs) -> Model` under its function name with published figures."""

    def wrap(fn):
        name = fn.__name__
        if name in _BUILDERS:
            raise ValueError(f"model {name!r} is registered twice")
        _BUILDERS[name] = fn
        _INFOS[name] = ModelInfo(name, paper, float(params), float(macs), tuple(input_shape),
                                 int(classes), int(min_size), source, notes)
        return fn

    return wrap


def list_models(pattern: str = "*") -> list[str]:
    """Registered names matching a shell-style wildcard (`ghostnet_*`, `*_cifar`), sorted."""
    return sorted(n for n in _BUILDERS if fnmatch.fnmatchcase(n, pattern))


def _lookup(name: str) -> str:
    if not isinstance(name, str):
        raise TypeError(f"model name must be a str, got {type(name).__name__}")
    if name in _BUILDERS:
        return name
    close = difflib.get_close_matches(name, list(_BUILDERS), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else "; see kerasnets.list_models()"
    raise ValueError(f"unknown model {name!r}{hint}")


def model_info(name: str) -> ModelInfo:
    """Published figures of a registered model (paper id, params, MACs, default input shape)."""
    return _INFOS[_lookup(name)]


def _check_input_shape(input_shape, info: ModelInfo) -> tuple[int, int, int]:
    try:
        shape = tuple(int(d) for d in input_shape)
    except (TypeError, ValueError):
        raise ValueError(f"input_shape must be (height, width, channels), got {input_shape!r}") from None
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"input_shape must be (height, width, channels) of positive ints, got {input_shape!r}")
    if min(shape[:2]) < info.min_size:
        raise ValueError(
            f"input_shape={shape} is too small for {info.name}: its downsampling needs height and "
            f"width >= {info.min_size} (default {info.input_shape})")
    return shape


def create_model(name: str, *, input_shape=None, classes=None, include_top: bool = True,
                 pooling=None, classifier_activation=None, **variant_kwargs):
    """Build a registered model as a tf_keras functional Model.

    `None` for input_shape/classes/classifier_activation means the variant's published default
    (softmax for the classifier). Extra keyword arguments go to the family builder (e.g. `width`).
    """
    key = _lookup(name)
    info = _INFOS[key]
    shape = _check_input_shape(info.input_shape if input_shape is None else input_shape, info)
    classes = info.classes if classes is None else classes
    if isinstance(classes, bool) or not isinstance(classes, int) or classes < 1:
        raise ValueError(f"classes must be an int >= 1, got {classes!r}")
    if pooling not in _POOLINGS:
        raise ValueError(f"pooling must be one of {_POOLINGS}, got {pooling!r}")
    activation = "softmax" if classifier_activation is None else classifier_activation
    return _BUILDERS[key](input_shape=shape, classes=classes, include_top=bool(include_top),
                          pooling=pooling, classifier_activation=activation, **variant_kwargs)


def reject_extra_kwargs(name, kwargs):
    """Builders without variant options raise a TypeError that names what they got."""
    if kwargs:
        raise TypeError(f"{name}() got unexpected keyword arguments {sorted(kwargs)}; it takes only "
                        "input_shape, classes, include_top, pooling and classifier_activation")
