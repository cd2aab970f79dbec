"""One tile's task (dustgp.tiles.task): the plain records that travel to and from a worker, and the default task,
run here in-process on a tiny sky (no Dask needed)."""

from __future__ import annotations

import pickle

import numpy as np
import torch

from dustgp.grid import Grid
from dustgp.tiles import TileJob, TilePrediction, TileStars, fit_tile, plan_tiles
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
