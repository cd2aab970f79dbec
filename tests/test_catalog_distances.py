"""Tests of dustgp.catalog.distances: equal-mass nodes of log-normal and parallax distance posteriors."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, stats

from dustgp.catalog import lognormal_nodes, parallax_distance_percentiles, parallax_nodes


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


def _brute_force_percentiles(plx: float, err: float, q: list[float], length: float) -> np.ndarray:
    """Quantiles q (pc) of d² exp(-d/L) N(plx; 1000/d, err²), by the trapezoid rule on 4 million points of d
    from 0 to 60 L (steps of L / 67 000: a thousandth of the narrowest posterior below)."""
    d = np.linspace(0.0, 60.0 * length, 4_000_001)[1:]
    log_post = 2.0 * np.log(d) - d / length - 0.5 * ((plx - 1000.0 / d) / err) ** 2
    post = np.exp(log_post - log_post.max())
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (post[1:] + post[:-1]))])
    return np.interp(q, cdf / cdf[-1], d)


@pytest.mark.parametrize(
    ("plx", "err", "length"),
    [
        (4.0, 0.4, 1350.0),  # S/N 10
        (1.0, 0.5, 1350.0),  # S/N 2: the prior matters
        (0.3, 1.0, 1350.0),  # the prior nearly alone
        (0.0, 0.5, 1350.0),
        (-0.5, 0.5, 1350.0),  # negative: a proper posterior beyond the prior's mode
        (-3.0, 0.3, 1350.0),  # S/N -10
        (2.0, 0.5, 400.0),  # another prior
    ],
)
def test_parallax_percentiles_match_the_brute_force_posterior(plx, err, length) -> None:
    found = parallax_distance_percentiles(np.array([plx]), np.array([err]), (16, 50, 84), length_scale=length)[0]
    expected = _brute_force_percentiles(plx, err, [0.16, 0.5, 0.84], length)
    # the table (512 points in ln d) reads percentiles to ~1e-4 of the distance (measured: <= 1.0e-4)
    np.testing.assert_allclose(found, expected, rtol=2e-4)
    nodes, _ = parallax_nodes(np.array([plx]), np.array([err]), 2, length_scale=length)
    np.testing.assert_allclose(nodes[0], parallax_distance_percentiles([plx], [err], (25, 75), length_scale=length)[0])


@pytest.mark.parametrize("plx", [2.0, 10.0])
@pytest.mark.parametrize("snr", [20.0, 50.0])
def test_parallax_median_tends_to_the_inverse_parallax_at_high_snr(plx, snr) -> None:
    # In x = 1000/d (mas) the posterior is x⁻⁴ exp(-a/x) N(plx; x, σ²), a = 1000/L. With x = plx (1 + ε t), ε = σ/plx,
    # the prior's log has slopes β1 ε, β2 ε², β3 ε³ in t (β1 = a/plx - 4, β2 = 4 - 2a/plx, β3 = 6a/plx - 8): the
    # Gaussian's median moves by β1 ε (1 + β2 ε²) and the cubic term adds β3 ε³ / 3, so
    # x_med / plx = 1 + β1 ε² + γ ε⁴ + O(ε⁶), γ = β1 β2 + β3 / 3, |γ| < 18.7 for plx >= 2 mas. At S/N >= 20 the
    # O(ε⁶) term is below 0.5 ε⁴ (-176 ε⁶, mpmath): |x_med / plx - 1 - β1 ε²| <= 20 ε⁴.
    err, eps, a = plx / snr, 1.0 / snr, 1000.0 / 1350.0
    median = parallax_distance_percentiles(np.array([plx]), np.array([err]), (50,))[0, 0]
    assert abs(1000.0 / median / plx - 1.0 - (a / plx - 4.0) * eps**2) <= 20.0 * eps**4
    # and so d_med -> 1000 / plx, off by (4 - a/plx) ε² < 4 ε² relative
    assert 0.0 < median * plx / 1000.0 - 1.0 < 4.0 * eps**2 * (1.0 + 5.0 * eps**2)


def test_parallax_posterior_checks_its_input() -> None:
    with pytest.raises(ValueError, match="parallax_err > 0"):
        parallax_nodes(np.array([1.0, 2.0]), np.array([0.1, 0.0]), 4)
    with pytest.raises(ValueError, match="finite"):
        parallax_distance_percentiles(np.array([np.nan]), np.array([0.1]))
    with pytest.raises(ValueError, match=r"q: expected percentiles in \(0, 100\)"):
        parallax_distance_percentiles(np.array([1.0]), np.array([0.1]), (0, 50))
    with pytest.raises(ValueError, match="length_scale"):
        parallax_nodes(np.array([1.0]), np.array([0.1]), 4, length_scale=-1.0)


def test_parallax_tables_in_chunks_agree() -> None:
    rng = np.random.default_rng(5)
    plx, err = rng.normal(1.0, 2.0, 300), rng.uniform(0.02, 1.0, 300)
    whole = parallax_distance_percentiles(plx, err, chunk=1000)
    np.testing.assert_array_equal(parallax_distance_percentiles(plx, err, chunk=7), whole)
    assert np.all(np.diff(whole, axis=1) > 0)
