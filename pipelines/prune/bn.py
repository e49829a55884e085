"""Data-free filter pruning from BatchNorm statistics (arXiv 2112.01155).

A channel leaves its BatchNorm as N(beta, gamma^2) over the data the BN was trained on, so its
expected activation after ReLU is known without any data:
E[relu(z)] = beta * Phi(beta / |gamma|) + |gamma| * phi(beta / |gamma|).
Channels that contribute little in expectation go first.
"""
from __future__ import annotations

import math

from kerasnets.pipelines.prune.graph import ChannelGraph
from kerasnets.pipelines.prune.structured import batchnorm_scores


def expected_relu(gamma: float, beta: float) -> float:
    sigma = abs(float(gamma))
    if sigma < 1e-12:
        return max(float(beta), 0.0)
    z = beta / sigma
    cdf = 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))
    pdf = math.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
    return beta * cdf + sigma * pdf


def scores(graph: ChannelGraph, context=None) -> dict:
    return batchnorm_scores(graph, expected_relu)
