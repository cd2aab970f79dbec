"""Shared by the tiles tests: predictions of a known field, a stand-in task, a uniform sky, an in-process cluster."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from statistics import NormalDist
from typing import Any

import numpy as np
import pytest

from dustgp import Catalog, Grid
from dustgp.posterior_map import DEFAULT_PERCENTILES
from dustgp.tiles import TileJob, TilePrediction, TileStars

#: Standard-normal quantiles of the default percentiles: a Gaussian summary's percentiles are mean + Z std.
Z = np.array([NormalDist().inv_cdf(q / 100.0) for q in DEFAULT_PERCENTILES])


def known_density(grid: Grid) -> np.ndarray:
    l, b, d = grid.cell_centers_lbd()
    return 1e-3 * (1.0 + 0.5 * np.sin(np.radians(4 * l)) * np.cos(np.radians(9 * b)) + d / 500.0)


def prediction_of(density: np.ndarray, grid: Grid, *, std: float = 0.0, n_samples: int = 0) -> TilePrediction:
    """A Gaussian-shaped TilePrediction of a known density on ``grid`` (extinction from its near edge)."""
    ext = np.cumsum(density * grid.path_lengths[:, None, None], axis=0)
    return TilePrediction(
        density_mean=density,
        density_std=np.full_like(density, std),
        density_percentiles=density + Z[:, None, None, None] * std,
        extinction_mean=ext,
        extinction_std=np.full_like(ext, std),
        extinction_percentiles=ext + Z[:, None, None, None] * std,
        density_samples=np.repeat(density[None], n_samples, axis=0) if n_samples else None,
    )


def constant_task(job: TileJob, stars: TileStars) -> TilePrediction:
    """Stand-in for a fit: the density is the least-squares constant through the tile's stars.

    A tile with ghost cells integrates from the Sun; one without from its training grid's d_min, as the model does.
    """
    grid = Grid.from_dict(job.grid)
    path = stars.distance - (0.0 if grid.ghost_cells else grid.d_min)
    rho = float(np.sum(stars.extinction * path) / np.sum(path * path))
    piece = Grid.from_dict(job.piece)
    result = prediction_of(np.full(piece.shape, rho), piece, std=0.05)
    result.info = {"stars": {"used": len(stars)}, "sigma_median": float(np.median(stars.extinction_err))}
    return result


def uniform_sky(rng: np.random.Generator, grid: Grid, rho: float = 2e-3, n: int = 4000) -> Catalog:
    """Noise-free stars in a uniform medium of density ``rho`` filling 0 .. d_max (foreground included)."""
    l = rng.uniform(grid.l_edges[0], grid.l_edges[-1], n)
    b = rng.uniform(grid.b_edges[0], grid.b_edges[-1], n)
    d = rng.uniform(grid.d_min, grid.d_max, n)
    return Catalog(l, b, d, rho * d, np.full(n, 0.01))


@contextmanager
def local_cluster() -> Iterator[Any]:
    """An in-process cluster's Client: starts in about a second, runs the stand-in tasks without pickling trouble.

    Skips the calling test when ``distributed`` (the dask extra) is absent.
    """
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster,
        distributed.Client(cluster) as client,
    ):
        yield client
