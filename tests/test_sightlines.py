"""The sightline operator against analytic integrals, and the likelihood statistics against the direct sum."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dustgp.grid import Grid, GridError, lbd_to_xyz
from dustgp.sightlines import GaussianStatistics, Sightlines


@pytest.fixture
def grid() -> Grid:
    return Grid(l=(50, 90, 4), b=(-10, 10, 3), d=(100, 500, 8), ghost_cells=2)


def _field(grid: Grid, profile) -> torch.Tensor:
    """A density depending on distance only, evaluated at cell centres, shape grid.shape."""
    rho = profile(grid.d_centers)[:, None, None] * np.ones(grid.shape)
    return torch.as_tensor(rho)


def test_constant_density_gives_rho_times_distance(grid: Grid, rng: np.random.Generator) -> None:
    # A = ∫0^d rho ds = rho d exactly for uniform cells, wherever the star sits in its cell
    l = rng.uniform(50, 90, 500)
    b = rng.uniform(-10, 10, 500)
    d = rng.uniform(100, 500, 500)
    sl = Sightlines.from_positions(grid, l, b, d)
    a = sl.extinction(_field(grid, lambda dc: np.full_like(dc, 2e-3))).numpy()
    np.testing.assert_allclose(a, 2e-3 * d, rtol=1e-12)


def test_linear_ramp_matches_cell_sum_and_converges_to_integral(rng: np.random.Generator) -> None:
    # rho(s) = k s: the cell-centred sum is exact on whole cells (midpoint rule is exact for a linear
    # integrand); the partial last cell uses the cell-centre value, error <= k Δd (d - d_near) / 2.
    k = 1e-5
    d = rng.uniform(100, 500, 300)
    for n in (8, 64, 512):
        grid = Grid(l=(0, 10, 1), b=(0, 10, 1), d=(100, 500, n), ghost_cells=4)
        sl = Sightlines.from_positions(grid, np.full(300, 5.0), np.full(300, 5.0), d)
        a = sl.extinction(_field(grid, lambda dc: k * dc)).numpy()
        exact = 0.5 * k * d**2
        bound = k * (400 / n) ** 2 / 2 + 1e-12
        assert np.all(np.abs(a - exact) <= bound)


def test_star_on_boundary_counts_whole_cells_only(grid: Grid) -> None:
    edges = grid.d_edges[grid.ghost_cells + 1 : -1]
    sl = Sightlines.from_positions(grid, np.full(edges.size, 60.0), np.zeros(edges.size), edges)
    rho = _field(grid, lambda dc: 1e-3 * (1 + np.arange(dc.size)))
    expected = np.cumsum((1e-3 * (1 + np.arange(grid.n_d))) * grid.path_lengths)
    a = sl.extinction(rho).numpy()
    # a star exactly on edge k sits at the start of cell k: fraction 0, so A is the sum of cells before it
    np.testing.assert_allclose(a, expected[grid.ghost_cells : grid.n_d - 1], rtol=1e-12)
    assert np.all(sl.fraction == 0)


def test_star_in_first_cell_after_ghosts(grid: Grid) -> None:
    # ghost cells 0-50, 50-100; a star at 130 pc crosses both ghosts fully and 30 pc of the first region cell
    sl = Sightlines.from_positions(grid, [70.0], [0.0], [130.0])
    rho = _field(grid, lambda dc: np.where(dc < 100, 1e-3, 4e-3))
    np.testing.assert_allclose(sl.extinction(rho).numpy(), [1e-3 * 100 + 4e-3 * 30], rtol=1e-12)
    np.testing.assert_allclose(sl.fraction, [30.0 / 50.0])


def test_stars_off_grid_and_in_ghost_cells_are_counted(grid: Grid) -> None:
    sl = Sightlines.from_positions(grid, [70, 70, 120, 70], [0, 0, 0, 40], [300, 50, 300, 300])
    assert (len(sl), sl.n_in_ghost_cells, sl.n_off_grid) == (1, 1, 2)
    np.testing.assert_array_equal(sl.star_index, [0])


def test_longitude_range_across_zero() -> None:
    grid = Grid(l=(350, 10, 4), b=(-5, 5, 1), d=(100, 200, 2), ghost_cells=1)
    np.testing.assert_allclose(grid.l_edges, [350, 355, 360, 365, 370])
    np.testing.assert_allclose(grid.l_centers, [352.5, 357.5, 2.5, 7.5])
    _, _, i_l = grid.locate(np.array([351.0, 359.0, 1.0, 9.0, 20.0]), np.zeros(5), np.full(5, 150.0))
    np.testing.assert_array_equal(i_l, [0, 1, 2, 3, -1])


def test_bad_grid_specifications_are_refused() -> None:
    with pytest.raises(GridError, match="ghost cells need d_min > 0"):
        Grid(l=(0, 10, 2), b=(0, 10, 2), d=(0, 100, 2), ghost_cells=1)
    with pytest.raises(GridError, match="b: expected edges within"):
        Grid(l=(0, 10, 2), b=(-95, 10, 2), d=(10, 100, 2))
    with pytest.raises(GridError, match="strictly"):
        Grid(l=(0, 10, 2), b=(0, 10, 2), d=[10, 50, 40])


def test_matrix_matches_extinction(grid: Grid, rng: np.random.Generator) -> None:
    l, b, d = rng.uniform(50, 90, 200), rng.uniform(-10, 10, 200), rng.uniform(100, 500, 200)
    sl = Sightlines.from_positions(grid, l, b, d)
    rho = torch.as_tensor(rng.uniform(1e-4, 1e-2, grid.shape))
    np.testing.assert_allclose((sl.matrix() @ rho.reshape(-1)).numpy(), sl.extinction(rho).numpy(), rtol=1e-12)


def test_statistics_equal_direct_gaussian_likelihood(grid: Grid, rng: np.random.Generator) -> None:
    n = 2000
    l, b, d = rng.uniform(50, 90, n), rng.uniform(-10, 10, n), rng.uniform(100, 500, n)
    sl = Sightlines.from_positions(grid, l, b, d)
    a_obs = rng.uniform(0, 2, len(sl))
    sigma = rng.uniform(0.05, 0.3, len(sl))
    stats = GaussianStatistics.from_stars(sl, a_obs, sigma)
    rho = torch.as_tensor(rng.uniform(1e-4, 1e-2, (3, *grid.shape)))
    direct = torch.distributions.Normal(sl.extinction(rho), torch.as_tensor(sigma)).log_prob(torch.as_tensor(a_obs))
    via_stats = stats.log_likelihood(rho.reshape(3, grid.n_d, grid.n_columns))
    np.testing.assert_allclose(via_stats.numpy(), direct.sum(-1).numpy(), rtol=1e-10)


@settings(max_examples=50, deadline=None)
@given(
    l=st.floats(0, 360, exclude_max=True),
    b=st.floats(-90, 90),
    d=st.floats(1e-3, 1e5),
)
def test_cartesian_round_trip(l: float, b: float, d: float) -> None:
    x, y, z = lbd_to_xyz(np.array([l]), np.array([b]), np.array([d]))[0]
    assert np.hypot(np.hypot(x, y), z) == pytest.approx(d, rel=1e-12)
    assert np.degrees(np.arcsin(np.clip(z / d, -1, 1))) == pytest.approx(b, abs=1e-6)
    if abs(b) < 89.9:
        assert np.degrees(np.arctan2(y, x)) % 360 == pytest.approx(l, abs=1e-6) or abs(l - 360) < 1e-6
