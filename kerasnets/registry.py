"""Model registry: builders registered beside their published sizes, looked up by name.

The zoo declares each family's variants as data: one builder and a table of `Variant` rows (the
builder arguments that make the variant, and its figures with their source), registered by one
`register_variants` call, so a variant's name is written once. `register_model` registers a single
builder function under its own name (for builders outside the zoo).
"""
from __future__ import annotations

import dataclasses
import difflib
import fnmatch
from typing import Callable

_POOLINGS = (None, "avg", "max")
FIGURE_SOURCES = ("paper", "official code", "this implementation")
# the arguments create_model passes to every builder
HEAD_ARGUMENTS = ("input_shape", "classes", "include_top", "pooling", "classifier_activation")


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
    # who produced params/macs, one of FIGURE_SOURCES; where the two figures come from different
    # places, the one closest to this code ("this implementation" > "official code" > "paper")
    figure_source: str = "paper"

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Variant:
    """One row of a family's variant table: the name, the builder arguments that make it, its
    figures, and (where they differ from the table's) its paper, input, classes, source, ...
    `options` are the keyword arguments a caller of `create_model` may pass on to the builder."""

    name: str
    args: dict
    params: float
    macs: float
    notes: str | None = None
    paper: str | None = None
    input_shape: tuple | None = None
    classes: int | None = None
    min_size: int | None = None
    source: str | None = None
    figure_source: str | None = None
    options: tuple | None = None


_BUILDERS: dict[str, Callable] = {}
_INFOS: dict[str, ModelInfo] = {}
_OPTIONS: dict[str, tuple | None] = {}  # None: the builder checks its own keyword arguments


def _check_figure_source(figure_source, name):
    if figure_source not in FIGURE_SOURCES:
        raise ValueError(f"figure_source of {name!r} must be one of {FIGURE_SOURCES}, "
                         f"got {figure_source!r}")
    return figure_source


def _register(name, builder, info, options):
    if not isinstance(name, str) or not name:
        raise TypeError(f"model name must be a non-empty str, got {name!r}")
    if name in _BUILDERS:
        raise ValueError(f"model {name!r} is registered twice")
    _BUILDERS[name] = builder
    _INFOS[name] = info
    _OPTIONS[name] = options


def register_model(*, paper: str, params: float, macs: float, input_shape, classes: int = 1000,
                   min_size: int = 32, source: str = "paper", notes: str = "",
                   figure_source: str = "paper"):
    """Decorator: register `fn(**kwargs) -> Model` under its function name with published figures.

    The function receives input_shape, classes, include_top, pooling, classifier_activation and
    whatever else the caller of `create_model` passes."""

    def wrap(fn):
        name = fn.__name__
        info = ModelInfo(name, paper, float(params), float(macs), tuple(input_shape), int(classes),
                         int(min_size), source, notes, _check_figure_source(figure_source, name))
        _register(name, fn, info, None)
        return fn

    return wrap


def register_variants(builder: Callable, variants, *, paper: str | None = None, input_shape=None,
                      classes: int = 1000, min_size: int = 32, source: str = "paper",
                      notes: str = "", figure_source: str = "paper", options: tuple = ()) -> None:
    """Register every row of a variant table (all rows or none).

    `create_model(row.name, **kwargs)` calls `builder(**row.args, name=row.name, input_shape=...,
    classes=..., include_top=..., pooling=..., classifier_activation=..., **kwargs)`, where kwargs
    may only name the row's `options` (the table's unless the row gives its own). The other
    keyword arguments here are the table's defaults for what a row leaves as None."""
    entries = []
    for row in variants:
        if not isinstance(row, Variant):
            raise TypeError(f"register_variants needs Variant rows, got {type(row).__name__}")
        row_options = tuple(options if row.options is None else row.options)
        fixed = set(row.args) & (set(row_options) | set(HEAD_ARGUMENTS) | {"name"})
        if fixed:
            raise ValueError(f"variant {row.name!r} fixes {sorted(fixed)}, which callers pass")
        field = lambda value, default: default if value is None else value  # noqa: E731
        if field(row.paper, paper) is None or field(row.input_shape, input_shape) is None:
            raise ValueError(f"variant {row.name!r} needs a paper and an input_shape (its own or "
                             "the table's)")
        info = ModelInfo(
            row.name, field(row.paper, paper), float(row.params), float(row.macs),
            tuple(field(row.input_shape, input_shape)), int(field(row.classes, classes)),
            int(field(row.min_size, min_size)), field(row.source, source), field(row.notes, notes),
            _check_figure_source(field(row.figure_source, figure_source), row.name))
        entries.append((row.name, _variant_builder(builder, row.name, dict(row.args)), info,
                        row_options))
    names = [entry[0] for entry in entries]
    twice = sorted({n for n in names if names.count(n) > 1 or n in _BUILDERS})
    if twice:
        raise ValueError(f"model {twice[0]!r} is registered twice")
    for entry in entries:
        _register(*entry)


def _variant_builder(builder, name, args):
    def build(**kwargs):
        return builder(**args, name=name, **kwargs)

    build.__name__ = build.__qualname__ = name
    return build


def check_options(name: str, kwargs, accepted) -> None:
    """The one check of a model's extra keyword arguments: a TypeError naming the model, the
    unknown arguments and the ones it accepts."""
    unknown = sorted(set(kwargs) - set(accepted))
    if not unknown:
        return
    accepts = ", ".join(HEAD_ARGUMENTS)
    extra = (f" and the variant arguments {_join(sorted(accepted))}" if accepted
             else " and no variant arguments")
    plural = "s" if len(unknown) > 1 else ""
    raise TypeError(f"{name} got unexpected keyword argument{plural} {_join(unknown)}; "
                    f"it accepts {accepts}{extra}")


def _join(names):
    names = list(names)
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def _load_zoo():
    """Registers every family of the zoo on first look-up (importing them loads TensorFlow, which
    `import kerasnets` leaves to the first use so that a caller can set its log levels first)."""
    import kerasnets.zoo  # noqa: F401


def list_models(pattern: str = "*") -> list[str]:
    """Registered names matching a shell-style wildcard (`ghostnet_*`, `*_cifar`), sorted."""
    _load_zoo()
    return sorted(n for n in _BUILDERS if fnmatch.fnmatchcase(n, pattern))


def one_per_family(exclude=()) -> list[str]:
    """The first registered variant (by name) of each family, a family being the models of one
    paper, leaving out the names in `exclude`; sorted."""
    chosen = {}
    for name in list_models():
        if name not in exclude:
            chosen.setdefault(_INFOS[name].paper, name)
    return sorted(chosen.values())


def _lookup(name: str) -> str:
    if not isinstance(name, str):
        raise TypeError(f"model name must be a str, got {type(name).__name__}")
    _load_zoo()
    if name in _BUILDERS:
        return name
    close = difflib.get_close_matches(name, list(_BUILDERS), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else "; see kerasnets.list_models()"
    raise ValueError(f"unknown model {name!r}{hint}")


def model_info(name: str) -> ModelInfo:
    """Published figures of a registered model (paper id, params, MACs, default input shape)."""
    return _INFOS[_lookup(name)]


def model_options(name: str) -> tuple:
    """The keyword arguments `create_model(name, ...)` accepts beyond the head arguments (for a
    builder registered with `register_model`, whatever it checks itself: reported as ())."""
    return tuple(sorted(_OPTIONS[_lookup(name)] or ()))


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
                 pooling=None, classifier_activation=None, weights=None, **variant_kwargs):
    """Build a registered model as a tf_keras functional Model.

    `None` for input_shape/classes/classifier_activation means the variant's published default
    (softmax for the classifier), or with `weights` the shape and classes they were trained at.
    `weights="cifar10"` loads the trained weights shipped with the package (`kerasnets.weights`
    lists them; their hash is checked). Extra keyword arguments go to the family builder (e.g.
    `width`); `model_options(name)` lists those a variant accepts.
    """
    key = _lookup(name)
    info = _INFOS[key]
    if weights is not None:
        from kerasnets import weights as shipped

        trained = shipped.entry(key, weights)
        input_shape = trained["input_shape"] if input_shape is None else input_shape
        classes = trained["classes"] if classes is None else classes
        shipped.check_head(key, weights, input_shape, classes, include_top)
        model = create_model(key, input_shape=input_shape, classes=classes, include_top=include_top,
                             pooling=pooling, classifier_activation=classifier_activation, **variant_kwargs)
        shipped.load_into(model, key, weights)
        return model
    if _OPTIONS[key] is not None:
        check_options(key, variant_kwargs, _OPTIONS[key])
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
    """For builders registered with `register_model`: the shared check with no variant arguments."""
    check_options(name, kwargs, ())
