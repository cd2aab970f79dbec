"""Tests of dustgp.catalog.distances: equal-mass nodes of log-normal and parallax distance posteriors."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, stats

from dustgp.catalog import lognormal_nodes, parallax_nodes


def test_lognormal_nodes_put_the_16_84_interval_at_two_sigma() -> None:
    nodes, log_w = lognormal_nodes(np.array([200.0]), np.array([30.0]), 100)
    assert np.exp(log_w[0]).sum() == pytest.approx(1.0)
    assert np.all(np.diff(nodes[0]) > 0)
    # the nodes are equal-mass quantiles: their 16th and 84th percentiles are 2 sigma_d apart
    lo, hi = np.percentile(nodes[0], [16, 84])
    assert hi - lo == pytest.approx(60.0, rel=0.02)
    assert np.median(nodes[0]) == pytest.approx(200.0, rel=1e-3)


def test_parallax_nodes_follow_the_posterior_quantiles() -> None:
    plx, err, length = np.array([4.0, 1.0]), np.array([0.4, 0.5]), 1350.0
    nodes, log_w = parallax_nodes(plx, err, 8, length_scale=length)
    assert np.allclose(np.exp(log_w).sum(axis=1), 1.0)
    for i in range(2):
        post = lambda d, i=i: d * d * math.exp(-d / length) * stats.norm.pdf(plx[i], 1000.0 / d, err[i])  # noqa: E731
        total, _ = integrate.quad(post, 1.0, 30_000.0, limit=500, points=[1000 / plx[i]])
        below, _ = integrate.quad(post, 1.0, nodes[i, 3], limit=500)
        # the 4th of 8 nodes is the median of the 4th eighth: the mass below it is 7/16 (table resolution ~1%)
        assert below / total == pytest.approx(7 / 16, abs=0.01)
