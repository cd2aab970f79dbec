"""The far tiles' foreground (dustgp.tiles.foreground): a layer's extinction read at any distance, the column of
each star, the shift of a far tile's summaries, and a far tile's starting mean. Pure: no Dask needed (the
end-to-end check of the foreground on a cluster is in test_tiles_mosaic.py)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from dustgp.grid import Grid
from dustgp.tiles import TileError, TileStars, plan_tiles
from dustgp.tiles.foreground import _add_foreground, _Foreground, _tile_fit_options
from dustgp.tiles.geometry import _unwrap
from dustgp.tiles.merge import _Accumulator
from tiles_support import Z, prediction_of

RHO = 2e-3  # mag/pc


def uniform_layer(grid: Grid, *, std: float = 0.05) -> _Foreground:
    """The foreground of a layer predicting a uniform density RHO over all of ``grid`` (extinction from the Sun)."""
    acc = _Accumulator(grid, Z.size, 0)
    index = (slice(0, grid.n_d), slice(0, grid.n_b), slice(0, grid.n_l))
    acc.add(index, np.ones(grid.shape), prediction_of(np.full(grid.shape, RHO), grid, std=std))
    return _Foreground.from_layer(acc, (0, grid.n_d))


def test_the_foreground_is_linear_in_distance() -> None:
    # a uniform medium from the Sun: the extinction at any distance d is RHO d (linear within a cell, as the
    # model's integral is), including between cell edges and at the Sun
    grid = Grid(l=(50, 60, 4), b=(-5, 5, 2), d=(100, 300, 10), ghost_cells=1)
    foreground = uniform_layer(grid)
    for d in (0.0, 50.0, 100.0, 137.5, 300.0):
        mean, std = foreground.at(d, "tile 9")
        assert mean.shape == std.shape == (grid.n_b, grid.n_l)
        np.testing.assert_allclose(mean, RHO * d, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(std, 0.05, rtol=1e-12)
    with pytest.raises(TileError, match=r"tile 9: needs the foreground at 350 pc, outside .*\(0\.\.300 pc\)"):
        foreground.at(350.0, "tile 9")


def test_a_layer_with_a_gap_is_refused() -> None:
    grid = Grid(l=(50, 60, 4), b=(-5, 5, 2), d=(100, 300, 10), ghost_cells=1)
    acc = _Accumulator(grid, Z.size, 0)
    half = (slice(0, grid.n_d), slice(0, grid.n_b), slice(0, 2))  # the first two of four columns only
    acc.add(half, np.ones((grid.n_d, grid.n_b, 2)), prediction_of(np.full((grid.n_d, grid.n_b, 2), RHO), grid))
    with pytest.raises(TileError, match="does not cover every column"):
        _Foreground.from_layer(acc, (0, grid.n_d))


def _columns_by_search(grid: Grid, l: np.ndarray, b: np.ndarray, l_centre: float) -> tuple[np.ndarray, np.ndarray]:
    """The column of each position by a search of the edges unwrapped around ``l_centre``, clipped to the grid."""
    l_u = _unwrap(l, l_centre)
    edges_u = _unwrap(grid.l_edges[0], l_centre) + (grid.l_edges - grid.l_edges[0])
    i_l = np.clip(np.searchsorted(edges_u, l_u, side="right") - 1, 0, grid.n_l - 1)
    i_b = np.clip(np.searchsorted(grid.b_edges, b, side="right") - 1, 0, grid.n_b - 1)
    return i_b, i_l


@pytest.mark.parametrize("l_range", [(50, 90), (350, 10), (-20, 20), (0, 360)])
def test_each_star_gets_its_own_column_or_the_nearest(l_range: tuple[float, float], rng: np.random.Generator) -> None:
    # positions on the grid, off it on every side (across l = 0 too), and on every cell edge
    grid = Grid(l=(*l_range, 16), b=(-10, 10, 8), d=(100, 300, 4), ghost_cells=1)
    lo, hi = float(grid.l_edges[0]), float(grid.l_edges[-1])  # increasing: (350, 10) is 350..370
    foreground = uniform_layer(grid)
    l_centre = 0.5 * (lo + hi)
    width = hi - lo
    l = np.concatenate([rng.uniform(lo - 0.3 * width, hi + 0.3 * width, 5000) % 360.0, grid.l_edges % 360.0])
    b = np.concatenate([rng.uniform(-14, 14, 5000), np.resize(grid.b_edges, grid.l_edges.size)])
    i_b, i_l = foreground.columns(l, b, l_centre)
    want_b, want_l = _columns_by_search(grid, l, b, l_centre)
    np.testing.assert_array_equal(i_b, want_b)
    np.testing.assert_array_equal(i_l, want_l)
    # positions inside a cell get that cell
    inside = np.abs(_unwrap(l, l_centre) - l_centre) < 0.5 * width
    centres = grid.l_centers[i_l[inside]]
    assert np.all(np.abs(_unwrap(l[inside], l_centre) - _unwrap(centres, l_centre)) <= 0.5 * width / 16 + 1e-9)


def test_a_gaussian_foreground_shifts_gaussian_summaries_exactly() -> None:
    # tile posterior N(m, s²) plus an independent foreground N(a, f²): N(m + a, s² + f²), percentiles m + a + z q
    grid = Grid(l=(50, 60, 4), b=(-5, 5, 2), d=(200, 300, 5), ghost_cells=0)
    s, f = 0.05, 0.12
    tile = prediction_of(np.full(grid.shape, RHO), grid, std=s)
    a = np.linspace(0.1, 0.4, grid.n_b * grid.n_l).reshape(grid.n_b, grid.n_l)
    shifted = _add_foreground(tile, a, np.full_like(a, f), np.asarray([2.5, 16.0, 50.0, 84.0, 97.5]))
    total = np.hypot(s, f)
    np.testing.assert_allclose(shifted.extinction_mean, tile.extinction_mean + a, rtol=1e-12)
    np.testing.assert_allclose(shifted.extinction_std, total, rtol=1e-12)
    expected = tile.extinction_mean + a + Z[:, None, None, None] * total
    np.testing.assert_allclose(shifted.extinction_percentiles, expected, rtol=1e-12)
    np.testing.assert_array_equal(shifted.density_mean, tile.density_mean)  # density is the tile's own


def test_a_far_tile_starts_its_mean_from_its_own_segments() -> None:
    grid = Grid(l=(50, 60, 4), b=(-5, 5, 2), d=(100, 300, 10), ghost_cells=1)
    near, far = plan_tiles(grid, n_l=1, n_b=1, n_d=2, overlap=0)
    d = np.linspace(far.grid.d_min + 1.0, far.grid.d_max, 50)
    stars = TileStars(np.full(50, 55.0), np.zeros(50), d, RHO * (d - far.grid.d_min), np.full(50, 0.01))
    options = {"inducing_points": 10}
    kept = {**options, "foreground": "ghost"}  # every tile keeps its ghost cells: one foreground layout
    assert _tile_fit_options(near, stars, options) == kept  # the near layer integrates from the Sun
    started = _tile_fit_options(far, stars, options)
    assert started == {**kept, "mean": pytest.approx(np.log10(RHO), rel=1e-12)}
    for given in ({"mean": -2.0}, {"config": SimpleNamespace(mean=-2.0)}):  # a FitConfig has .mean
        assert _tile_fit_options(far, stars, given) == {"foreground": "ghost", **given}  # the caller's mean kept
    assert _tile_fit_options(near, stars, {"foreground": "auto"}) == {"foreground": "auto"}  # as the caller chose
    nothing = TileStars(d[:1], d[:1], np.array([far.grid.d_min]), np.zeros(1), np.ones(1))
    assert _tile_fit_options(far, nothing, options) == kept  # no star beyond d_min: no guess
