"""The registry of compression criteria: one entry per method, saying what it needs and how it runs.

A `Criterion` declares whether it needs training data, whether it trains (so `compress` does not
fine-tune after it), whether it can prune to a `target` budget, whether it learns its own amount
(no `ratio`/`target`), whether it is structured (a smaller graph) or sparsity (zeroed weights),
and a one-line description. A score-based criterion gives `scores(graph, context) -> {channel:
importance}` (higher = more important) and is pruned per channel set by `prune_by_scores`; a
criterion whose work is more than scoring gives `apply(model, request, context) -> (model, ratio
used)`. Adding a criterion is one module and one `register_criterion` call.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib
from typing import Callable

from kerasnets.pipelines.prune import bn, complexity, l1, qsfm, slimming, structured
from kerasnets.pipelines.prune.graph import analyse
from kerasnets.pipelines.prune.structured import Target

KINDS = ("structured", "sparsity")
STRATEGIES = ("finetune", "scratch")


@dataclasses.dataclass
class Context:
    """What a criterion may use beyond the model: training data, a work folder, training options
    (pipelines.train config), a regulariser `strength` (None: the method's default) and, for
    structured methods, the model's channel graph."""
    data: object = None
    out_dir: str | None = None
    config: dict | None = None
    strength: float | None = None
    graph: object = None


@dataclasses.dataclass(frozen=True)
class Criterion:
    name: str
    description: str
    kind: str = "structured"
    needs_data: bool = False
    trains: bool = False
    targetable: bool = False
    learns_amount: str | None = None  # what to set instead of ratio/target, for one that learns it
    scores: Callable | None = None    # scores(graph, context) -> {channel: importance}
    apply: Callable | None = None     # apply(model, request, context) -> (model, ratio used)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"`kind` must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if (self.scores is None) == (self.apply is None):
            raise ValueError(f"criterion {self.name!r}: give exactly one of `scores` or `apply`")
        if self.scores is not None and self.kind != "structured":
            raise ValueError(f"criterion {self.name!r}: `scores` rank channels, so `kind` must be "
                             "'structured'")

    def run(self, model, request, context: Context):
        """(compressed model, ratio used) for `request` (a Request naming this criterion)."""
        if self.apply is not None:
            return self.apply(model, request, context)
        graph = context.graph if context.graph is not None else analyse(model)
        scores = self.scores(graph, context)
        pruner = lambda ratio: structured.prune_by_scores(model, scores, ratio, graph=graph)  # noqa: E731
        return structured.ratio_or_target(model, pruner, request.ratio, request.target)


_REGISTRY: dict[str, Criterion] = {}


def register_criterion(criterion: Criterion) -> Criterion:
    """Make `criterion` a method of `compress` under `criterion.name` (a new name)."""
    if not isinstance(criterion, Criterion):
        raise TypeError(f"criterion must be a pipelines.prune.criteria.Criterion, got "
                        f"{type(criterion).__name__}")
    if criterion.name in _REGISTRY:
        raise ValueError(f"a compression method named {criterion.name!r} is already registered")
    _REGISTRY[criterion.name] = criterion
    return criterion


def unregister_criterion(name: str) -> Criterion:
    """Remove the method `name` from the registry; returns its criterion."""
    return _REGISTRY.pop(get(name).name)


def get(name: str) -> Criterion:
    """The criterion registered as `name`; ValueError naming the choices otherwise."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown compression method {name!r}: `method` must be one of "
                         f"{', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def methods() -> dict[str, str]:
    """{method name: one-line description}, in registration order (for a CLI's choices)."""
    return {name: c.description for name, c in _REGISTRY.items()}


def names(**wanted) -> tuple[str, ...]:
    """Names of the registered criteria whose attributes equal `wanted`, e.g. needs_data=True."""
    return tuple(name for name, c in _REGISTRY.items()
                 if all(getattr(c, key) == value for key, value in wanted.items()))


@dataclasses.dataclass
class Request:
    """What `compress` was asked to do, checked before any work starts."""
    method: str
    ratio: float | None = None
    target: Target | None = None
    epochs: int = 0
    strategy: str = "finetune"

    def __post_init__(self):
        criterion = get(self.method)
        if criterion.learns_amount:
            if self.ratio is not None or self.target is not None:
                raise ValueError(f"{self.method} learns how many channels to remove: leave out "
                                 f"`ratio`/`target` and {criterion.learns_amount}")
        elif (self.ratio is None) == (self.target is None):
            raise ValueError("give exactly one of `ratio` (fraction of prunable channels/weights to "
                             "remove) or `target` (e.g. macs=20M, peak_ram=64kB)")
        if self.ratio is not None:
            self.ratio = structured.check_ratio(self.ratio)
        if isinstance(self.target, str):
            self.target = Target.parse(self.target)
        if self.target is not None and not criterion.targetable:
            raise ValueError(f"{self.method} cannot prune to a `target` (it keeps the model's shape "
                             f"or learns its own amount); use one of {', '.join(names(targetable=True))}")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"`strategy` must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")
        if self.epochs < 0:
            raise ValueError(f"`epochs` must be >= 0, got {self.epochs}")

    @property
    def criterion(self) -> Criterion:
        return get(self.method)


def _lazy(module: str, function: str) -> Callable:
    """`module.function`, imported on first call (keeps TFMOT out of `import ...prune`)."""
    def call(*args, **kwargs):
        return getattr(importlib.import_module(module), function)(*args, **kwargs)
    return call


_PRUNE = "kerasnets.pipelines.prune."
for _criterion in (
    Criterion("magnitude", "TFMOT magnitude sparsity: zero the smallest weights while fine-tuning",
              kind="sparsity", needs_data=True, trains=True, apply=_lazy(_PRUNE + "sparsity", "apply")),
    Criterion("m_by_n", "TFMOT 2:4 structured sparsity: zero 2 of every 4 weights while fine-tuning",
              kind="sparsity", needs_data=True, trains=True, apply=_lazy(_PRUNE + "sparsity", "apply")),
    Criterion("l1", "L1 norm of each channel's filters (Li et al.), data-free",
              targetable=True, scores=l1.scores),
    Criterion("bn", "expected post-ReLU activation from BatchNorm statistics, data-free",
              targetable=True, scores=bn.scores),
    *(Criterion(f"complexity_{mode}", f"L1 within channel sets, set ratios by their share of the "
                f"{cost} (complexity-driven), data-free", targetable=True,
                apply=functools.partial(complexity.apply, mode=mode))
      for mode, cost in (("pa", "parameters"), ("fa", "MACs"), ("ma", "peak activation memory"))),
    Criterion("qsfm", "redundant feature maps folded into their most similar twin, no fine-tuning",
              needs_data=True, targetable=True, apply=qsfm.apply),
    Criterion("slimming", "L1 penalty on BatchNorm scales, then one global cut (Network Slimming)",
              needs_data=True, trains=True, apply=slimming.apply),
    Criterion("scl", "learned binary channel masks under a connection-count penalty (SCL)",
              needs_data=True, trains=True, apply=_lazy(_PRUNE + "scl", "apply"),
              learns_amount="set the connection-count strength instead (`strength`, default 0.5)"),
):
    register_criterion(_criterion)
del _criterion
