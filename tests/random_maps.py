"""Maps with random content for the file-format tests: every value distinct, so any misplaced value shows."""

from __future__ import annotations

import numpy as np

from dustgp.grid import Grid
from dustgp.posterior_map import SUMMARIES, PosteriorMap

LEVELS = (2.5, 16.0, 50.0, 84.0, 97.5)
META = {
    "config": {"grid": {"l": [50, 90, 8]}, "inducing_points": 1000, "name": "Orion ✓"},
    "seed": 42,
    "hyperparameters": {"gamma": [20.0, 20.0, 10.0], "alpha": 0.7, "c": -3.1},
    "samples": 200,
}


def make_map(grid: Grid, *, n_samples: int = 3, seed: int = 0, dtype: type = np.float64) -> PosteriorMap:
    """A map with random positive fields (every value distinct, so any misplaced value shows)."""
    rng = np.random.default_rng(seed)
    rho = rng.lognormal(-7, 1, grid.shape)
    ext = np.cumsum(rho * grid.path_lengths[:, None, None], axis=0)
    pct = np.sort(rng.lognormal(0, 0.2, (len(LEVELS), *grid.shape)), axis=0)
    samples = (rho * rng.lognormal(0, 0.3, (n_samples, *grid.shape))).astype(dtype) if n_samples else None
    return PosteriorMap(
        grid=grid,
        percentiles=np.array(LEVELS),
        density_mean=rho.astype(dtype),
        density_std=(0.3 * rho).astype(dtype),
        density_percentiles=(pct * rho).astype(dtype),
        extinction_mean=ext.astype(dtype),
        extinction_std=(0.2 * ext).astype(dtype),
        extinction_percentiles=(pct * ext).astype(dtype),
        density_samples=samples,
        meta=META,
    )


GRIDS = {
    "plain": Grid(l=(50, 90, 8), b=(-10, 10, 6), d=(180, 500, 16), ghost_cells=2),
    "crossing_l0": Grid(l=(350, 10, 10), b=(-5, 5, 4), d=(100, 300, 5), ghost_cells=1),
    "no_ghosts": Grid(l=(120.5, 130.5, 5), b=(20, 30, 5), d=(50, 150, 4), ghost_cells=0),
    "all_longitudes": Grid(l=(0, 360, 24), b=(-30, 30, 4), d=(100, 300, 3), ghost_cells=1),
}
NONUNIFORM = Grid(l=(200, 230, 6), b=(-30, -20, 5), d=[100, 120, 150, 200, 300, 450], ghost_cells=3)
FIELDS = (*(summary.name for summary in SUMMARIES), "density_samples", "percentiles")


def assert_same_map(a: PosteriorMap, b: PosteriorMap, *, samples: bool = True) -> None:
    assert a.grid == b.grid
    for name in ("l_edges", "b_edges", "d_edges"):
        np.testing.assert_array_equal(getattr(a.grid, name), getattr(b.grid, name))
    assert a.grid.ghost_cells == b.grid.ghost_cells
    for name in FIELDS:
        x, y = getattr(a, name), getattr(b, name)
        if name == "density_samples" and not samples:
            assert y is None
            continue
        if x is None:
            assert y is None
            continue
        assert y.dtype == x.dtype, name
        np.testing.assert_array_equal(y, x, err_msg=name)
    assert b.meta == a.meta
