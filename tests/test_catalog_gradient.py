"""Tests of dustgp.catalog.gradient: the extinction-gradient estimator on exact and simulated sightlines, and the
inflation it gives."""

from __future__ import annotations

import math

import numpy as np
import pytest

from catalog_tables import SEED
from dustgp.catalog import Catalog, estimate_extinction_gradient

ONE_SIGMA = math.erf(1.0 / math.sqrt(2.0))  # 0.6827: Gaussian probability inside ±1 sigma
# A simulated sightline bundle: uniform 1e-3 mag/pc plus a cloud adding 0.5 mag between 300 and 320 pc.
RHO_0 = 1e-3  # mag/pc
CLOUD_NEAR, CLOUD_DEPTH, CLOUD_A = 300.0, 20.0, 0.5  # pc, pc, mag


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(SEED)


def test_gradient_fallback_when_neighbours_are_missing():
    # Three stars: nobody has min_neighbours = 5 neighbours, so every star uses max(A, 0) / d.
    g = estimate_extinction_gradient(
        [10.0, 10.1, 10.2], [0.0, 0.0, 0.0], [100.0, 200.0, 400.0], [0.2, -0.1, 0.8], [0.1] * 3, [10.0] * 3
    )
    np.testing.assert_allclose(g, [0.2 / 100.0, 0.0, 0.8 / 400.0])


def test_gradient_of_a_linear_sightline_is_exact():
    # A = 2e-3 d, no noise: every window fit is exact.
    n = 400
    rng = np.random.default_rng(1)
    d = rng.uniform(100.0, 900.0, n)
    g = estimate_extinction_gradient(
        rng.uniform(30.0, 31.0, n), rng.uniform(0.0, 1.0, n), d, 2e-3 * d, np.full(n, 0.05), 0.1 * d
    )
    np.testing.assert_allclose(g, 2e-3, rtol=1e-9)


def test_max_separation_limits_neighbours():
    # Two clumps 20 deg apart with opposite trends; with a 5 deg limit each star only sees its own clump.
    n = 100
    rng = np.random.default_rng(2)
    d = rng.uniform(100.0, 900.0, 2 * n)
    lon = np.concatenate([rng.uniform(0.0, 1.0, n), rng.uniform(20.0, 21.0, n)])
    a = np.concatenate([1e-3 * d[:n], 3e-3 * d[n:]])
    sigma_a = np.full(2 * n, 0.01)
    g = estimate_extinction_gradient(lon, np.zeros(2 * n), d, a, sigma_a, 0.1 * d, max_separation=5.0)
    np.testing.assert_allclose(g[:n], 1e-3, rtol=1e-9)
    np.testing.assert_allclose(g[n:], 3e-3, rtol=1e-9)


def true_extinction(d: np.ndarray) -> np.ndarray:
    return RHO_0 * d + CLOUD_A * np.clip((d - CLOUD_NEAR) / CLOUD_DEPTH, 0.0, 1.0)


@pytest.fixture
def simulated_sky(rng):
    """3000 stars in a 4°×4° patch, true distance uniform in 50-1000 pc, 15% distance errors, σ_A = 0.05."""
    n, frac, sigma_a = 3000, 0.15, 0.05
    d_true = rng.uniform(50.0, 1000.0, n)
    d_obs = d_true * (1.0 + frac * rng.standard_normal(n))
    a_obs = true_extinction(d_true) + sigma_a * rng.standard_normal(n)
    catalog = Catalog.from_arrays(
        rng.uniform(100.0, 104.0, n),
        rng.uniform(-2.0, 2.0, n),
        d_obs,
        a_obs,
        np.full(n, sigma_a),
        distance_err=frac * d_obs,
        inflate=False,
    )
    return catalog, d_true


def test_estimated_gradient_matches_truth_where_smooth(simulated_sky):
    catalog, _ = simulated_sky
    g = estimate_extinction_gradient(
        catalog.l,
        catalog.b,
        catalog.distance,
        catalog.extinction,
        catalog.extinction_err_observed,
        catalog.distance_err,
    )
    assert np.all(np.isfinite(g))
    assert np.all(g >= 0)
    d = catalog.distance
    # Far (> 4 sigma_d) from the cloud and from the 50/1000 pc edges of the simulated population.
    smooth = ((d > 80) & (d < 180)) | ((d > 550) & (d < 750))
    n_smooth = int(smooth.sum())
    # Neighbouring stars share up to `neighbours` = 32 fit points, so count only n/32 independent estimates.
    standard_error = g[smooth].std() / math.sqrt(n_smooth / 32)
    assert abs(g[smooth].mean() - RHO_0) < 3 * standard_error
    # Through the cloud (observed distances 280-360 pc) the estimate sees the step, smoothed by sigma_d.
    in_cloud = (d > 280) & (d < 360)
    assert np.median(g[in_cloud]) > 3 * RHO_0


def test_inflation_calibrates_the_uncertainties(simulated_sky):
    catalog, _ = simulated_sky
    inflated = catalog.inflate_for_distance()
    assert np.all(inflated.inflation >= 0)
    # The likelihood compares the measured A (the true extinction at the TRUE distance, plus noise) with the
    # model at the CATALOGUE distance; the distance error is what the inflation accounts for. Stars beyond
    # 800 pc are left out: there the truncation of the simulated population at 1000 pc biases
    # E[d_true | d_obs].
    use = catalog.distance < 800.0
    residual = np.abs(catalog.extinction - true_extinction(catalog.distance))[use]
    n = int(use.sum())
    binomial_error = math.sqrt(ONE_SIGMA * (1 - ONE_SIGMA) / n)
    inside_raw = np.mean(residual < catalog.extinction_err[use])
    inside_inflated = np.mean(residual < inflated.extinction_err[use])
    assert ONE_SIGMA - inside_raw > 5 * binomial_error  # without inflation: clearly too small sigmas
    assert abs(inside_inflated - ONE_SIGMA) + 3 * binomial_error < abs(inside_raw - ONE_SIGMA)
    assert abs(inside_inflated - ONE_SIGMA) < 4 * binomial_error
