"""L1-norm filter pruning (Li et al., arXiv 1608.08710): the plain, data-free baseline."""
from __future__ import annotations

from kerasnets.pipelines.prune.graph import ChannelGraph
from kerasnets.pipelines.prune.structured import filter_norms


def scores(graph: ChannelGraph, context=None) -> dict:
    """Sum of |w| over each channel's filters in every layer that produces it."""
    return filter_norms(graph, order=1)
