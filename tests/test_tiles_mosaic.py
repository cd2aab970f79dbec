"""Fitting a region tile by tile (dustgp.tiles.mosaic): the checks before anything runs, a tile without stars, the
far tiles' foreground through a whole run, and a small end-to-end fit on worker processes."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from dustgp import Grid, simulate
from dustgp.tiles import TileError, fit_tiles, plan_tiles
from tiles_support import Z, constant_task, uniform_sky

needs_distributed = pytest.mark.skipif(
    importlib.util.find_spec("distributed") is None, reason="needs distributed (pip install dustgp[dask])"
)


# ----- checks made before any task runs: no Dask needed ---------------------------------------------------------
def test_bad_calls_are_refused_before_any_task(rng: np.random.Generator) -> None:
    grid = Grid(l=(50, 60, 10), b=(-5, 5, 4), d=(100, 200, 10), ghost_cells=1)
    stars = uniform_sky(rng, grid)
    tiles = plan_tiles(grid, n_l=2, n_b=1)
    with pytest.raises(ValueError, match="retries: expected >= 0, got -1"):
        fit_tiles(stars, grid, tiles=tiles, retries=-1, task=constant_task)
    with pytest.raises(ValueError, match="foreground must be 'ghost' for a mosaic"):
        fit_tiles(stars, grid, tiles=tiles, fit_options={"foreground": "auto"}, task=constant_task)
    with pytest.raises(TileError, match="expected at least one tile"):
        fit_tiles(stars, grid, tiles=[], task=constant_task)
    shorter = Grid(l=(50, 60, 10), b=(-5, 5, 4), d=(100, 150, 5), ghost_cells=1)
    with pytest.raises(TileError, match=r"tile 0 .*: its training grid .* lies outside"):
        fit_tiles(stars, shorter, tiles=tiles, task=constant_task)


# ----- stand-in tasks on an in-process cluster -------------------------------------------------------------------
def test_a_tile_without_stars_raises(local_client, rng: np.random.Generator) -> None:
    grid = Grid(l=(50, 60, 10), b=(-5, 5, 4), d=(100, 200, 10), ghost_cells=1)
    stars = uniform_sky(rng, grid)
    west = stars.select(stars.l < 52.0)  # tile 1 trains on l 53..60
    with pytest.raises(TileError, match=r"tile 1 .* holds no star"):
        fit_tiles(west, grid, tiles=plan_tiles(grid, n_l=2, n_b=1), client=local_client, task=constant_task)


def test_far_tiles_take_their_foreground_from_the_near_tiles(local_client, rng: np.random.Generator) -> None:
    """Stars in a uniform medium: a far tile sees only the extinction beyond its d_min, and its map gets it back.

    Also reaches the cluster through its scheduler address (a string) rather than the Client.
    """
    rho = 2e-3
    grid = Grid(l=(50, 60, 10), b=(-5, 5, 4), d=(100, 300, 20), ghost_cells=1)
    prediction = grid.refined(2.0)
    tiles = plan_tiles(grid, n_l=2, n_b=1, n_d=2, overlap=2)
    address = local_client.scheduler.address
    dmap = fit_tiles(
        uniform_sky(rng, grid, rho), grid, tiles=tiles, prediction_grid=prediction, client=address, task=constant_task
    )
    # the far tiles recovered the density only if the foreground was subtracted from their stars' extinction
    np.testing.assert_allclose(dmap.density_mean, rho, rtol=1e-9)
    # and their extinction, integrated from their piece's near edge, had the foreground added back
    far_edges = prediction.d_edges[1:]
    np.testing.assert_allclose(dmap.extinction_mean, rho * far_edges[:, None, None] * np.ones(prediction.shape))
    # the foreground's spread (0.05 mag from the near layer) is added to the far stars' sigma (0.01 mag) ...
    sigmas = {r["position"][2]: r["sigma_median"] for r in dmap.meta["tiles"]}
    assert sigmas == {0: pytest.approx(0.01), 1: pytest.approx(np.hypot(0.01, 0.05))}
    # ... and to the far tiles' extinction: where only far tiles count, std is sqrt(0.05² + 0.05²) and the
    # Gaussian percentiles stay Gaussian
    far_only = prediction.d_centers > tiles[-1].core[2][0] + tiles[-1].blend[2][0]
    np.testing.assert_allclose(dmap.extinction_std[far_only], np.hypot(0.05, 0.05))
    expected = dmap.extinction_mean + Z[:, None, None, None] * dmap.extinction_std
    np.testing.assert_allclose(dmap.extinction_percentiles[:, far_only], expected[:, far_only])
    assert dmap.meta["tiling"]["counts"] == [2, 1, 2]


# ----- end to end on a small simulated sky, on worker processes ---------------------------------------------
@needs_distributed
def test_end_to_end_on_a_local_cluster() -> None:
    """Two tiles in l over a clump that straddles their boundary (seed 6: clump at l = 60.6 deg, d = 179 pc,
    sigma 26 pc, so it spans ~8 deg on each side), tiny fits (M = 100, 100 iterations).

    Tolerances: with these fits the median |relative density error| of single l columns scatters by about ±20%
    around ~0.13 (measured), so an edge/centre ratio below 1.5 says the boundary is no worse than fit noise. The
    seam test compares the step in log density across the tile boundary with the median step between
    neighbouring columns: measured 0.87 with the taper, 2.9 with a hard cut at the same settings.
    """
    sky = simulate(
        Grid(l=(50, 70, 20), b=(-5, 5, 10), d=(100, 300, 20), ghost_cells=0), n_stars=3000, n_clumps=1, seed=6
    )
    grid = Grid(l=(50, 70, 20), b=(-5, 5, 10), d=(100, 300, 20), ghost_cells=1)
    tiles = plan_tiles(grid, n_l=2, n_b=1, overlap=3)
    dmap = fit_tiles(  # client=None: fit_tiles starts LocalCluster(n_workers=2, threads_per_worker=1, processes=True)
        sky.catalog,
        grid,
        tiles=tiles,
        prediction_grid=grid,
        fit_options={"inducing_points": 100, "max_iterations": 100, "stop": "none"},
        predict_options={"samples": 50, "percentiles": (16.0, 50.0, 84.0)},
    )
    assert [t["attempts"] for t in dmap.meta["tiles"]] == [1, 1]
    assert dmap.meta["predict_options"]["percentiles"] == [16.0, 50.0, 84.0]
    assert sum(t["stars"]["used"] for t in dmap.meta["tiles"]) > len(sky.catalog)  # overlap stars fit twice
    region = slice(grid.ghost_cells, None)
    truth = sky.density_on(grid)[region]
    rel = np.abs(dmap.density_mean[region] / truth - 1.0)
    assert np.median(rel) < 0.3
    per_column = np.median(rel, axis=(0, 1))  # along l; the tile boundary is between columns 9 and 10
    edge, centre = per_column[8:12], per_column[[3, 4, 5, 6, 13, 14, 15, 16]]
    assert np.median(edge) / np.median(centre) < 1.5
    steps = np.median(np.abs(np.diff(np.log10(dmap.density_mean[region]), axis=2)), axis=(0, 1))
    assert steps[9] / np.median(steps) < 1.5
