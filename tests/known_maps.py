"""Maps with known content for tests: summaries that follow from a given density field, no fit needed."""

from __future__ import annotations

import numpy as np

from dustgp.grid import Grid
from dustgp.posterior_map import PosteriorMap

LEVELS = (2.5, 16.0, 50.0, 84.0, 97.5)


def make_map(
    grid: Grid, density: np.ndarray | float, *, n_samples: int = 0, seed: int = 0, scatter: float = 0.3
) -> PosteriorMap:
    """A map whose summaries follow from a known density field (no fit).

    Samples are the density times independent log-normal factors per cell; the stored percentiles are the
    density (and extinction) scaled by level-dependent factors so that every level is distinguishable.
    """
    rng = np.random.default_rng(seed)
    rho = np.broadcast_to(np.asarray(density, dtype=float), grid.shape).copy()
    ext = np.cumsum(rho * grid.path_lengths[:, None, None], axis=0)
    factors = np.array([1.0 + (q - 50.0) / 100.0 for q in LEVELS])[:, None, None, None]
    samples = rho * rng.lognormal(0.0, scatter, (n_samples, *grid.shape)) if n_samples else None
    return PosteriorMap(
        grid=grid,
        percentiles=np.array(LEVELS),
        density_mean=rho,
        density_std=0.2 * rho,
        density_percentiles=factors * rho,
        extinction_mean=ext,
        extinction_std=0.2 * ext,
        extinction_percentiles=factors * ext,
        density_samples=samples,
        meta={"seed": seed},
    )
