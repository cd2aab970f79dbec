"""Accuracy reports: against a simulated truth (maps built from the truth itself) and on held-out stars."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import special, stats

from dustgp.catalog import Catalog
from dustgp.grid import Grid
from dustgp.posterior_map import PosteriorMap
from dustgp.simulate import SimulatedSky, simulate
from dustgp.validation import compare_to_truth, holdout_report
from known_maps import make_map

REGION = Grid(l=(60, 70, 10), b=(-4, 4, 8), d=(150, 300, 15), ghost_cells=0)
#: The truth's own layout: simulate integrates the stars' extinctions on the region plus one foreground cell, with
#: cell-centre densities, so a map on this grid holding the true density predicts the true extinctions exactly.
GRID = REGION.with_ghost_cells(1)
#: make_map stores percentile q as (1 + (q - 50)/100) x the value: the 16-84% band is 0.66 .. 1.34 x the median.
BAND = (0.66, 1.34)


@pytest.fixture(scope="module")
def sky() -> SimulatedSky:
    return simulate(REGION, n_stars=2000, n_clumps=1, seed=2)


def scaled_truth(sky: SimulatedSky, factor: float) -> PosteriorMap:
    return make_map(GRID, factor * sky.density_on(GRID))


def test_the_truth_itself_scores_perfectly(sky: SimulatedSky) -> None:
    report = compare_to_truth(scaled_truth(sky, 1.0), sky)
    assert report.median_relative_error == report.p90_relative_error == report.max_relative_error == 0.0
    assert report.coverage_16_84 == report.extinction_coverage_16_84 == 1.0
    assert report.volume_coverage_16_84 == pytest.approx(1.0, rel=1e-12)
    assert report.volume_extinction_coverage_16_84 == pytest.approx(1.0, rel=1e-12)
    assert report.underestimated_fraction == 0.0
    # predicted and true extinctions are the same sums of ~16 terms: equal to float64 rounding
    assert report.extinction_median_residual == pytest.approx(0.0, abs=1e-12)


def test_the_volume_coverage_weights_cells_by_their_volume(sky: SimulatedSky) -> None:
    # the nearest 7 of 15 region cells twice the truth (outside the band), the 8 farthest the truth (inside)
    factor = np.ones(GRID.n_d)
    factor[GRID.ghost_cells : GRID.ghost_cells + 7] = 2.0
    report = compare_to_truth(make_map(GRID, factor[:, None, None] * sky.density_on(GRID)), sky)
    assert report.coverage_16_84 == pytest.approx(8 / 15, rel=1e-12)
    split = REGION.d_edges[7]  # 220 pc
    far_share = (REGION.d_max**3 - split**3) / (REGION.d_max**3 - REGION.d_min**3)
    assert report.volume_coverage_16_84 == pytest.approx(far_share, rel=1e-12)


@pytest.mark.parametrize("factor", [0.5, 1.1, 2.0])
def test_a_scaled_truth_scores_what_the_scale_implies(sky: SimulatedSky, factor: float) -> None:
    report = compare_to_truth(scaled_truth(sky, factor), sky)
    # every cell is off by exactly |factor - 1|
    for value in (report.median_relative_error, report.p90_relative_error, report.max_relative_error):
        assert value == pytest.approx(abs(factor - 1.0), rel=1e-12)
    # the truth is inside the band 0.66 .. 1.34 x factor x truth everywhere or nowhere
    inside = BAND[0] * factor <= 1.0 <= BAND[1] * factor
    assert report.coverage_16_84 == (1.0 if inside else 0.0)
    # a star is underestimated when factor x A_true < A_true - sigma, i.e. sigma < (1 - factor) A_true
    truth, sigma = sky.true_extinction, sky.catalog.extinction_err
    assert report.underestimated_fraction == pytest.approx(np.mean(sigma < (1.0 - factor) * truth), abs=1e-12)
    assert report.extinction_median_residual == pytest.approx(np.median((factor - 1.0) * truth), rel=1e-9)


def test_holdout_chi2_of_known_residuals() -> None:
    # constant 1e-3 mag/pc from the Sun: the map's mean extinction is 1e-3 d and its std 0.2 x that (make_map)
    grid = Grid(l=(60, 70, 5), b=(-4, 4, 4), d=(100, 500, 8), ghost_cells=1)
    dmap = make_map(grid, 1e-3)
    d = np.array([150.0, 250.0, 350.0, 450.0, 300.0])
    a_map = 1e-3 * d
    offset, sigma = 0.1, 0.05
    held_out = Catalog.from_arrays(
        l=[62.0, 64.0, 66.0, 68.0, 100.0],  # the last star is off the map and must not count
        b=[0.0, 1.0, -1.0, 2.0, 0.0],
        distance=d,
        extinction=a_map + offset,
        extinction_err=np.full(5, sigma),
    )
    report = holdout_report(dmap, held_out)
    assert report.n_stars == 4
    expected = np.mean(offset**2 / (sigma**2 + (0.2 * a_map[:4]) ** 2))
    assert report.reduced_chi2 == pytest.approx(expected, rel=1e-9)
    assert report.median_residual == pytest.approx(offset, rel=1e-9)


def test_holdout_chi2_adds_the_model_scatter() -> None:
    grid = Grid(l=(60, 70, 5), b=(-4, 4, 4), d=(100, 500, 8), ghost_cells=1)
    d = np.array([150.0, 250.0, 350.0, 450.0])
    a_map, offset, sigma, floor, fraction = 1e-3 * d, 0.1, 0.05, 0.03, 0.4
    held_out = Catalog.from_arrays(
        l=[62.0, 64.0, 66.0, 68.0],
        b=[0.0, 1.0, -1.0, 2.0],
        distance=d,
        extinction=a_map + offset,
        extinction_err=np.full(4, sigma),
    )
    report = holdout_report(make_map(grid, 1e-3), held_out, scatter=(floor, fraction))
    model_scatter = floor**2 + (fraction * a_map) ** 2  # the map's mean extinction is exact at these points
    expected = np.mean(offset**2 / (sigma**2 + (0.2 * a_map) ** 2 + model_scatter))
    assert report.reduced_chi2 == pytest.approx(expected, rel=1e-9)


def test_holdout_with_no_star_on_the_map_is_nan() -> None:
    grid = Grid(l=(60, 70, 5), b=(-4, 4, 4), d=(100, 500, 8), ghost_cells=1)
    away = Catalog.from_arrays(l=[200.0], b=[0.0], distance=[300.0], extinction=[0.3], extinction_err=[0.05])
    report = holdout_report(make_map(grid, 1e-3), away)
    assert report.n_stars == 0
    assert np.isnan(report.reduced_chi2)
    assert np.isnan(report.median_residual)


def _points_on(grid: Grid, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return rng.uniform(61.0, 69.0, n), rng.uniform(-3.5, 3.5, n), rng.uniform(120.0, 480.0, n)


def test_the_whole_predictive_scores_draws_from_itself_as_calibrated() -> None:
    # held-out extinctions drawn from the predictive a mixture claims: (1 - eps) N(A_map, s²) + eps U(low, high)
    grid = Grid(l=(60, 70, 5), b=(-4, 4, 4), d=(100, 500, 8), ghost_cells=1)
    dmap = make_map(grid, 1e-3)
    rng = np.random.default_rng(7)
    n, eps, sigma, (low, high) = 4000, 0.05, 0.05, (-0.1, 3.0)
    l, b, d = _points_on(grid, n, rng)
    # the mean is exact at any point, the std 0.2 x the mean (make_map)
    a_map = 1e-3 * d
    s = np.sqrt(sigma**2 + (0.2 * a_map) ** 2)
    outlier = rng.random(n) < eps
    a_obs = np.where(outlier, rng.uniform(low, high, n), a_map + s * rng.standard_normal(n))
    held_out = Catalog.from_arrays(l=l, b=b, distance=d, extinction=a_obs, extinction_err=np.full(n, sigma))
    report = holdout_report(dmap, held_out, outliers=(eps, low, high))
    # mean z² of n N(0, 1) scores: sd sqrt(2 / n) = 0.022; a share: sd sqrt(0.68 x 0.32 / n) = 0.0074
    assert report.predictive_reduced_chi2 == pytest.approx(1.0, abs=4 * np.sqrt(2 / n))
    assert report.predictive_inside_16_84 == pytest.approx(0.68, abs=4 * np.sqrt(0.68 * 0.32 / n))
    # the Gaussian moments alone call the same draws badly calibrated: the outliers dominate their chi²
    assert report.reduced_chi2 > 5.0
    # and the flagged stars are the outliers, mostly (an outlier inside the Gaussian's core is not flagged)
    assert report.flagged == pytest.approx(outlier.sum(), rel=0.3)


@pytest.mark.parametrize("nu", [None, 4.0])
def test_the_whole_predictive_pit_of_known_residuals(nu: float | None) -> None:
    grid = Grid(l=(60, 70, 5), b=(-4, 4, 4), d=(100, 500, 8), ghost_cells=1)
    d = np.array([150.0, 250.0, 350.0, 450.0])
    a_map, sigma, eps, (low, high) = 1e-3 * d, 0.05, 0.1, (0.0, 2.0)
    offset = np.array([0.1, -0.05, 0.02, 1.2])
    held_out = Catalog.from_arrays(
        l=[62.0, 64.0, 66.0, 68.0],
        b=[0.0, 1.0, -1.0, 2.0],
        distance=d,
        extinction=a_map + offset,
        extinction_err=[sigma] * 4,
    )
    z = offset / np.sqrt(sigma**2 + (0.2 * a_map) ** 2)
    cdf = special.ndtr(z) if nu is None else stats.t.cdf(z, df=nu)
    pit = (1 - eps) * cdf + eps * (a_map + offset - low) / (high - low)
    report = holdout_report(make_map(grid, 1e-3), held_out, outliers=(eps, low, high), nu=nu)
    assert report.predictive_reduced_chi2 == pytest.approx(np.mean(special.ndtri(pit) ** 2), rel=1e-9)
    assert report.predictive_inside_16_84 == np.mean((pit > 0.16) & (pit < 0.84))
