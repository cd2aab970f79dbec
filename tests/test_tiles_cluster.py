"""Running tiles on Dask (dustgp.tiles.cluster): a failed task is retried, one that keeps failing is named, and the
client may be an address, a Client or a cluster object. Stand-in tasks on an in-process cluster."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import numpy as np
import pytest

from dustgp.grid import Grid
from dustgp.tiles import TileError, TileJob, TilePrediction, TileStars, fit_tiles, plan_tiles
from tiles_support import constant_task, uniform_sky

# a test that starts no cluster of its own still needs distributed (the dask extra) to be imported by fit_tiles
needs_distributed = pytest.mark.skipif(
    importlib.util.find_spec("distributed") is None, reason="needs distributed (pip install dustgp[dask])"
)


def failing_once(marker: Path, failing_tile: int):
    def task(job: TileJob, stars: TileStars) -> TilePrediction:
        if job.index == failing_tile and not marker.exists():
            marker.touch()
            raise RuntimeError("worker hiccup")
        return constant_task(job, stars)

    return task


def failing_always(job: TileJob, stars: TileStars) -> TilePrediction:
    if job.index == 1:
        raise ValueError("bad tile data")
    return constant_task(job, stars)


def test_a_failed_tile_is_retried(local_client, rng: np.random.Generator, tmp_path: Path, caplog) -> None:
    grid = Grid(l=(50, 60, 10), b=(-5, 5, 4), d=(100, 200, 10), ghost_cells=1)
    tiles = plan_tiles(grid, n_l=2, n_b=1)
    with caplog.at_level(logging.INFO, logger="dustgp.tiles"):
        dmap = fit_tiles(
            uniform_sky(rng, grid),
            grid,
            tiles=tiles,
            prediction_grid=grid,
            client=local_client,
            task=failing_once(tmp_path / "failed-once", failing_tile=1),
        )
    assert [t["attempts"] for t in dmap.meta["tiles"]] == [1, 2]
    assert "tile 1 [l 2/2, b 1/1, d 1/1]" in caplog.text
    assert "retrying" in caplog.text
    np.testing.assert_allclose(dmap.density_mean, 2e-3, rtol=1e-9)


def test_a_tile_that_always_fails_raises_naming_it(local_client, rng: np.random.Generator) -> None:
    grid = Grid(l=(50, 60, 10), b=(-5, 5, 4), d=(100, 200, 10), ghost_cells=1)
    tiles = plan_tiles(grid, n_l=2, n_b=1)
    with pytest.raises(TileError, match=r"tile 1 \[l 2/2.*failed 3 time\(s\).*bad tile data") as info:
        fit_tiles(uniform_sky(rng, grid), grid, tiles=tiles, client=local_client, retries=2, task=failing_always)
    assert isinstance(info.value.__cause__, ValueError)


def test_client_can_be_a_cluster_object(local_client, rng: np.random.Generator) -> None:
    """A cluster object (LocalCluster here; dask-jobqueue clusters are the same kind) gets a Client of its own."""
    grid = Grid(l=(50, 60, 10), b=(-5, 5, 4), d=(100, 200, 10), ghost_cells=1)
    tiles = plan_tiles(grid, n_l=2, n_b=1)
    dmap = fit_tiles(
        uniform_sky(rng, grid), grid, tiles=tiles, prediction_grid=grid, client=local_client.cluster, task=constant_task
    )
    np.testing.assert_allclose(dmap.density_mean, 2e-3, rtol=1e-9)
    assert local_client.status == "running"  # the caller's own Client is left alone


@needs_distributed
def test_client_of_the_wrong_kind(rng: np.random.Generator) -> None:
    grid = Grid(l=(50, 60, 10), b=(-5, 5, 4), d=(100, 200, 10), ghost_cells=1)
    with pytest.raises(TypeError, match="client: expected None, a scheduler address"):
        fit_tiles(uniform_sky(rng, grid), grid, tiles=plan_tiles(grid, n_l=2, n_b=1), client=42, task=constant_task)
