"""dustgp.prediction: the summaries of the samples, where the conditional covariance is computed, and predictions
outside the volume the stars constrain (a flag per cell, and a band never narrower there; issue 11, item 6)."""

import math

import numpy as np
import pytest
import torch

import dustgp
from dustgp.grid import Grid
from dustgp.io import read_map
from dustgp.prediction import MAX_COVARIANCE_STRIDE, constrained_cells, covariance_strides, percentiles_along
from dustgp.projection import rbf_apply, rbf_cross_covariance
from dustgp.simulate import simulate

REGION = Grid(l=(60, 80, 8), b=(-5, 5, 4), d=(150, 350, 10), ghost_cells=0)
TRAIN = Grid(l=(60, 80, 4), b=(-5, 5, 2), d=(150, 350, 6), ghost_cells=1)
#: Beyond d_max (350 pc) to 500 pc, and beyond the training longitudes (80 deg) to 100 deg
WIDE = Grid(l=(60, 100, 8), b=(-5, 5, 2), d=(150, 500, 14), ghost_cells=1)
SAMPLES = 400
#: Sampling error of a band measured as log10(p84 / p16) from SAMPLES draws: each percentile of a normal has a
#: standard error of sqrt(p (1 - p) / S) / pdf(z) = 0.076 sigma at S = 400 and p = 0.16, so the 2-sigma wide band
#: has a relative error of 0.076 sqrt(2) / 2 = 5.4%; three of those is the slack.
BAND_SLACK = 3 * 0.076 * np.sqrt(2) / 2 * np.sqrt(400 / SAMPLES)


def test_percentiles_are_numpys_along_the_sample_axis() -> None:
    samples = torch.from_numpy(np.random.default_rng(2).lognormal(size=(3, 5, 200)).astype(np.float32))
    levels = [2.5, 16, 50, 84, 97.5]
    expected = np.percentile(samples.numpy().astype(np.float64), levels, axis=-1)
    np.testing.assert_allclose(percentiles_along(samples, levels), expected, rtol=1e-6)


def test_rbf_apply_is_the_unscaled_kernel_times_the_weights() -> None:
    gen = torch.Generator().manual_seed(5)
    x, z = (
        torch.randn(300, 3, generator=gen, dtype=torch.float64),
        torch.randn(40, 3, generator=gen, dtype=torch.float64),
    )
    gamma, weights = (
        torch.tensor([0.7, 1.1, 0.9], dtype=torch.float64),
        torch.randn(40, 6, generator=gen, dtype=torch.float64),
    )
    expected = rbf_cross_covariance(x, z, gamma, torch.tensor(1.0, dtype=torch.float64)) @ weights
    torch.testing.assert_close(rbf_apply(x, z, gamma, weights), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("gamma", [5.0, 30.0, 200.0, 1e4])
def test_conditional_covariance_is_computed_within_a_quarter_scale_length(gamma: float) -> None:
    grid = Grid(l=(50, 90, 100), b=(-10, 10, 100), d=(180, 500, 105), ghost_cells=2)
    stride_b, stride_l = covariance_strides(grid, [gamma, 2 * gamma, 3 * gamma])
    for stride, step in ((stride_b, 0.2), (stride_l, 0.4)):
        apart = stride * math.radians(step) * grid.d_max  # pc between computed sightlines at d_max
        assert 1 <= stride <= MAX_COVARIANCE_STRIDE
        assert stride == 1 or apart <= 0.25 * gamma
        assert stride == MAX_COVARIANCE_STRIDE or (stride + 1) * math.radians(step) * grid.d_max > 0.25 * gamma


def test_constrained_cells_follow_the_farthest_star_of_each_column() -> None:
    trained = Grid(l=(0, 20, 2), b=(0, 10, 1), d=(100, 300, 4), ghost_cells=1)  # columns l 0-10 and 10-20
    stars = np.array([[[120.0, np.nan]], [[220.0, np.nan]]])  # one column with stars to 220 pc, one without
    grid = Grid(l=(0, 30, 3), b=(0, 10, 1), d=(100, 400, 6), ghost_cells=1)  # to 400 pc and l = 30 deg
    coverage, reliable = constrained_cells(stars, trained, grid)
    # cell centres: ghost 50, then 125, 175, 225, 275, 325, 375 pc; only the first column has stars
    assert coverage[:, 0, 0].tolist() == [True, True, True, False, False, False, False]
    assert not coverage[:, :, 1:].any()  # no star in the second column; the third is off the training grid
    np.testing.assert_array_equal(reliable[:, 0, 0], [120.0, 220.0])
    assert np.isnan(reliable[:, 0, 1:]).all()


def test_constrained_cells_refuses_star_distances_of_another_grid() -> None:
    with pytest.raises(ValueError, match=r"star_distances: expected shape \(2, 2, 4\)"):
        constrained_cells(np.zeros((2, 3, 3)), TRAIN, WIDE)


@pytest.fixture(scope="module")
def sky():
    return simulate(REGION, n_stars=500, n_clumps=1, seed=5)


@pytest.fixture(scope="module", params=["svi", "newton"])
def wide_map(request, sky):
    method = request.param
    fitted = dustgp.fit(
        sky.catalog,
        TRAIN,
        method=method,
        inducing_points=30,
        # newton to convergence (46 steps): an unconverged q(v) is still narrower than the prior where no star
        # constrains it, which is not what the band beyond the stars is compared with
        max_iterations=40 if method == "svi" else 80,
        particles=8,
        seed=1,
        progress=False,
    )
    return fitted, fitted.predict(WIDE, samples=SAMPLES, progress=False)


def _band(dmap) -> np.ndarray:
    """Width of the 16-84% band of the density in dex, (n_d, n_b, n_l)."""
    p16, p84 = (dmap.density_percentiles[list(dmap.percentiles).index(q)] for q in (16.0, 84.0))
    return np.log10(p84 / p16)


def test_fit_records_the_nearest_and_farthest_star_of_each_column(sky, wide_map) -> None:
    fitted, _ = wide_map
    _, i_b, i_l = TRAIN.locate(sky.catalog.l, sky.catalog.b, sky.catalog.distance)
    on = i_b >= 0
    column = i_b[on] * TRAIN.n_l + i_l[on]
    d = sky.catalog.distance[on]
    farthest = fitted.star_distances[1].ravel()
    for c in range(TRAIN.n_columns):
        assert farthest[c] == pytest.approx(d[column == c].max())


def test_cells_beyond_the_stars_are_flagged_in_the_map(wide_map) -> None:
    _, dmap = wide_map
    assert dmap.coverage.shape == WIDE.shape
    d = WIDE.d_centers
    assert not dmap.coverage[d > TRAIN.d_max].any()  # beyond d_max
    assert not dmap.coverage[:, :, WIDE.l_centers > TRAIN.l_edges[-1]].any()  # off the training longitudes
    assert dmap.coverage[WIDE.ghost_cells, :, WIDE.l_centers < TRAIN.l_edges[-1]].all()  # among the stars


def test_band_outside_is_never_narrower_than_inside_next_to_it(wide_map) -> None:
    _, dmap = wide_map
    band, coverage = _band(dmap), dmap.coverage
    # along each sightline: the first cell beyond the farthest star against the last one before it
    for i_b in range(WIDE.n_b):
        for i_l in np.flatnonzero(coverage.any(axis=(0, 1))):
            inside = np.flatnonzero(coverage[:, i_b, i_l])
            last = inside[-1]
            assert band[last + 1, i_b, i_l] >= band[last, i_b, i_l] * (1 - BAND_SLACK)
    # across the edge of the training longitudes: the first column without stars against the last with them
    edge = np.flatnonzero(coverage.any(axis=(0, 1)))[-1]
    region = slice(WIDE.ghost_cells, None)
    assert np.all(band[region, :, edge + 1] >= band[region, :, edge] * (1 - BAND_SLACK))


def test_flags_survive_the_files_and_reach_queries(wide_map, tmp_path) -> None:
    _, dmap = wide_map
    for name in ("map.nc", "map.fits"):
        back = read_map(dmap.save(tmp_path / name))
        np.testing.assert_array_equal(back.coverage, dmap.coverage)
        np.testing.assert_array_equal(back.reliable_distance, dmap.reliable_distance)
    farthest = float(dmap.reliable_distance[1, 0, 0])
    l0, b0 = WIDE.l_centers[0], WIDE.b_centers[0]
    _, flags = dmap.query_gal(
        [l0, l0, 90.0], [b0, b0, b0], [farthest / 1e3 - 0.01, farthest / 1e3 + 0.01, 0.3], return_flags=True
    )
    assert flags["in_bounds"].tolist() == [True, True, True]
    assert flags["reliable_dist"].tolist() == [True, False, False]  # beyond the farthest star; no star at l = 90


def test_prediction_inside_the_stars_is_unchanged_by_the_flags(wide_map) -> None:
    # unconstrained cells draw from a generator of their own: constrained cells keep the draws they had
    fitted, dmap = wide_map
    star_distances = fitted.star_distances
    try:
        fitted.star_distances = None
        plain = fitted.predict(WIDE, samples=SAMPLES, progress=False)
    finally:
        fitted.star_distances = star_distances
    assert plain.coverage is None
    np.testing.assert_array_equal(
        plain.density_percentiles[:, dmap.coverage], dmap.density_percentiles[:, dmap.coverage]
    )
