"""One tile's task (dustgp.tiles.task): the plain records that travel to and from a worker (the stars with their
distance posteriors), and the default task, run here in-process on a tiny sky (no Dask needed)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from dustgp.catalog import Catalog, distances
from dustgp.fitting import FitConfig
from dustgp.fitting.stars import star_likelihood
from dustgp.grid import Grid
from dustgp.sightlines import Sightlines
from dustgp.tiles import TileJob, TilePrediction, TileStars, fit_tile, plan_tiles
from dustgp.tiles.foreground import _Foreground
from dustgp.tiles.mosaic import _tile_stars
from known_maps import make_map
from tiles_support import uniform_sky


def test_from_map_takes_the_last_distance_cells() -> None:
    grid = Grid(l=(50, 60, 3), b=(-5, 5, 2), d=(100, 200, 5), ghost_cells=1)
    dmap = make_map(grid, np.linspace(1e-3, 2e-3, grid.n_d)[:, None, None], n_samples=4)
    piece = TilePrediction.from_map(dmap, 3, {"stars": {"used": 7}})
    np.testing.assert_array_equal(piece.density_mean, dmap.density_mean[-3:])
    np.testing.assert_array_equal(piece.extinction_percentiles, dmap.extinction_percentiles[:, -3:])
    np.testing.assert_array_equal(piece.density_samples, dmap.density_samples[:, -3:])
    assert piece.info == {"stars": {"used": 7}}
    whole = TilePrediction.from_map(make_map(grid, 1e-3))  # all cells, no samples
    assert whole.extinction_std.shape == grid.shape
    assert whole.density_samples is None


def test_records_are_plain_data(rng: np.random.Generator) -> None:
    # what crosses a process boundary pickles to itself: numpy arrays, dicts of edges, no torch objects
    grid = Grid(l=(50, 60, 4), b=(-5, 5, 2), d=(100, 200, 5), ghost_cells=1)
    tile = plan_tiles(grid, n_l=1, n_b=1)[0]
    cat = uniform_sky(rng, grid, n=30)
    stars = TileStars(cat.l, cat.b, cat.distance, cat.extinction, cat.extinction_err)
    job = TileJob(index=0, name=tile.name, grid=tile.grid.to_dict(), piece=grid.to_dict())
    assert len(stars) == 30
    back_stars, back_job = pickle.loads(pickle.dumps((stars, job)))
    np.testing.assert_array_equal(back_stars.extinction, stars.extinction)
    assert back_job == job
    assert Grid.from_dict(back_job.grid) == tile.grid


def test_fit_tile_fits_predicts_and_restores_threads(rng: np.random.Generator) -> None:
    grid = Grid(l=(50, 60, 4), b=(-5, 5, 2), d=(100, 200, 5), ghost_cells=1)
    piece = Grid(l=(50, 60, 4), b=(-5, 5, 2), d=(100, 200, 10), ghost_cells=1)
    cat = uniform_sky(rng, grid, n=300)
    job = TileJob(
        index=0,
        name="tile 0",
        grid=grid.to_dict(),
        piece=piece.to_dict(),
        fit_options={"inducing_points": 10, "max_iterations": 3, "stop": "none", "seed": 1},
        predict_options={"samples": 8, "keep_samples": 2, "seed": 1},
        torch_threads=1 if torch.get_num_threads() > 1 else 2,  # not the current setting, so a change shows
    )
    threads = torch.get_num_threads()
    result = fit_tile(job, TileStars(cat.l, cat.b, cat.distance, cat.extinction, cat.extinction_err))
    assert torch.get_num_threads() == threads
    assert result.density_mean.shape == piece.shape
    assert result.density_samples.shape == (2, *piece.shape)
    assert np.all(np.isfinite(result.extinction_percentiles))
    assert result.info["stars"]["used"] == 300
    assert result.info["iterations"] == 3


def _parallax_sky(grid: Grid, n: int = 300, seed: int = 4) -> Catalog:
    """Stars of a uniform medium (2e-3 mag/pc) over ``grid`` with parallaxes of S/N 2-40, read as a catalogue is."""
    rng = np.random.default_rng(seed)
    d = rng.uniform(grid.d_min + 10.0, grid.d_max - 10.0, n)
    err = rng.uniform(0.05, 1.0, n)
    l = rng.uniform(grid.l_edges[0], grid.l_edges[-1], n)
    b = rng.uniform(grid.b_edges[0], grid.b_edges[-1], n)
    plx = 1000.0 / d + err * rng.standard_normal(n)
    return Catalog.from_arrays(l, b, None, 2e-3 * d, np.full(n, 0.05), parallax=plx, parallax_err=err)


def _assert_same_stars(back: Catalog, catalog: Catalog) -> None:
    names = ("l", "b", "distance", "distance_err", "parallax", "parallax_err", "extinction", "extinction_err")
    for name in (*names, "extinction_err_observed", "inflation", "row_index"):
        np.testing.assert_array_equal(getattr(back, name), getattr(catalog, name), err_msg=name)
    assert back.parallax_length_scale == catalog.parallax_length_scale
    assert set(back.distance_node_cache) == set(catalog.distance_node_cache)
    for k, nodes in catalog.distance_node_cache.items():
        np.testing.assert_array_equal(back.distance_node_cache[k], nodes)


def test_tile_stars_carry_the_distance_posteriors_there_and_back(rng: np.random.Generator) -> None:
    grid = Grid(l=(50, 60, 4), b=(-5, 5, 2), d=(100, 400, 6), ghost_cells=1)
    catalog = _parallax_sky(grid).select(np.arange(0, 300, 3))  # inflated, nodes cached, rows of the input
    assert np.any(catalog.inflation > 0)
    assert catalog.distance_node_cache
    stars = TileStars.from_catalog(catalog)
    _assert_same_stars(pickle.loads(pickle.dumps(stars)).to_catalog(), catalog)
    # a catalogue of distances with uncertainties, no parallaxes, keeps them too
    plain = Catalog(
        catalog.l, catalog.b, catalog.distance, catalog.extinction, [0.05] * 100, distance_err=catalog.distance_err
    )
    _assert_same_stars(TileStars.from_catalog(plain).to_catalog(), plain)
    # the five arrays alone still make a tile's stars
    assert TileStars(*(np.ones(3) for _ in range(5))).to_catalog().distance_err is None


def test_a_tiles_stars_keep_their_posteriors_and_the_far_ones_lose_their_foreground() -> None:
    grid = Grid(l=(50, 60, 4), b=(-5, 5, 2), d=(100, 400, 6), ghost_cells=1)
    catalog = _parallax_sky(grid)
    near, far = plan_tiles(grid, n_l=1, n_b=1, n_d=2, overlap=1)
    stars = _tile_stars(near, catalog, None, near.l_centre)
    inside = near.contains(catalog.l, catalog.b, catalog.distance)
    _assert_same_stars(stars.to_catalog(), catalog.select(inside))
    # a far tile: the nearer layer's extinction (0.1 mag, spread 0.02 mag) taken off, its spread added to sigma_obs
    edges = grid.d_edges
    shape = (edges.size, grid.n_b, grid.n_l)
    foreground = _Foreground(grid, edges, np.full(shape, 0.1), np.full(shape, 0.02))
    far_stars = _tile_stars(far, catalog, foreground, far.l_centre)
    expected = catalog.select(far.contains(catalog.l, catalog.b, catalog.distance))
    np.testing.assert_allclose(far_stars.extinction, expected.extinction - 0.1)
    np.testing.assert_allclose(far_stars.extinction_err, np.hypot(expected.extinction_err_observed, 0.02))
    for name in ("distance", "distance_err", "parallax", "parallax_err", "inflation", "row_index"):
        np.testing.assert_array_equal(getattr(far_stars, name), getattr(expected, name), err_msg=name)
    np.testing.assert_array_equal(far_stars.distance_node_cache[8], expected.distance_nodes(8)[0])


def test_a_tile_fit_has_the_likelihood_of_a_single_fit(monkeypatch: pytest.MonkeyPatch) -> None:
    grid = Grid(l=(50, 60, 4), b=(-5, 5, 2), d=(100, 400, 6), ghost_cells=1)
    catalog = _parallax_sky(grid)
    stars = TileStars.from_catalog(catalog)
    # the likelihood a single fit of the catalogue would use: quadrature over the same parallax nodes
    config = FitConfig(inducing_points=10)
    lines = Sightlines.from_positions(grid, catalog.l, catalog.b, catalog.distance)
    single, tiled = (
        star_likelihood(c.select(lines.star_index), lines, config, dtype=torch.float64, device=torch.device("cpu"))
        for c in (catalog, stars.to_catalog())
    )
    assert single.distance_treatment == tiled.distance_treatment == "quadrature"
    for name in ("star", "log_prior"):
        np.testing.assert_array_equal(getattr(tiled.nodes, name), getattr(single.nodes, name))
    np.testing.assert_array_equal(tiled.nodes.sightlines.fraction, single.nodes.sightlines.fraction)
    torch.testing.assert_close(tiled.sigma2, single.sigma2)

    # the task fits over the nodes that travelled with the stars: no parallax posterior is tabulated in the worker
    def tabulate(*args: object, **kwargs: object) -> None:
        raise AssertionError("a parallax posterior was tabulated in the tile's task")

    monkeypatch.setattr(distances, "_quantiles", tabulate)
    job = TileJob(
        index=0,
        name="tile 0",
        grid=grid.to_dict(),
        piece=grid.to_dict(),
        fit_options={"inducing_points": 10, "max_iterations": 2, "stop": "none", "seed": 1, "coarse_start": False},
        predict_options={"samples": 4, "seed": 1},
    )
    result = fit_tile(job, stars)
    assert result.info["distance_uncertainty"] == "quadrature"
