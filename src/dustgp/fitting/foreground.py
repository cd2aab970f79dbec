"""Is the foreground empty? What the stars just behind d_min say of the dust in front of it.

The training grid's foreground ghost cells hold the dust in front of ``d_min`` as cells of the same Gaussian
process as the region (docs: Method §3). Where the stars see next to no dust in front of ``d_min``, the ghost cells'
log density must lie several dex below the region's within a scale length of it. A stationary prior can only do
that with a large scale factor and long scale lengths; the region then gets too few degrees of freedom and bands
too narrow for its errors. Measured on the three stiff skies of ``benchmarks/bench_stiff.py`` (empty foreground,
σ_A = 10% of A, no floor), fitted with the training grid's two ghost cells and without them: alpha = 1.4-2.1 dex²
and gamma = 53-95 pc against 0.037-0.042 dex² and 44-55 pc; median density error 3.9-4.8% against 2.3-3.5%; the
truth inside the 16-84% band in 46-51% of cells against 57-59% (docs: Design notes, "An empty foreground").

So :func:`dustgp.fit` (``foreground="auto"``, the default) fits without the ghost cells when
:func:`check_foreground` finds the foreground empty: its extinction, the robust intercept at ``d_min`` of the stars'
extinction against distance over the first region cells, lies (with twice its standard error) below
:data:`EMPTY_FRACTION` of what the region's mean density would put in front of ``d_min``.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats

from ..catalog import Catalog
from ..grid import Grid
from ..sightlines import Sightlines

__all__ = ["EMPTY_FRACTION", "MIN_STARS", "ForegroundCheck", "check_foreground", "without_empty_foreground"]

logger = logging.getLogger(__name__)

#: The foreground counts as empty below this fraction of the extinction that the region's mean density (median
#: of A/d over the stars) would put in front of d_min: its log density two dex or more below the region's.
EMPTY_FRACTION = 0.01
#: Fewest stars in the first region cells to decide on; with fewer, the ghost cells stay.
MIN_STARS = 20
#: Region cells behind d_min whose stars estimate the foreground, and most stars used (the nearest).
DEPTH_CELLS, MAX_STARS = 2, 2000


@dataclass(frozen=True)
class ForegroundCheck:
    """The foreground extinction that the stars just behind ``d_min`` show, and whether it counts as empty.

    Attributes
    ----------
    d_min : float
        Near edge of the region, pc.
    extinction, extinction_err : float
        Extinction in front of ``d_min`` (the robust intercept of A against d - d_min) and its standard error, mag.
    limit : float
        ``EMPTY_FRACTION`` × (median A/d of the stars) × ``d_min``, mag.
    n_stars : int
        Stars that estimated it (those between ``d_min`` and the far edge of the first ``DEPTH_CELLS`` cells).
    empty : bool
        ``extinction + 2 extinction_err < limit``.
    """

    d_min: float
    extinction: float
    extinction_err: float
    limit: float
    n_stars: int
    empty: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        state = "empty" if self.empty else "not shown empty"
        return (
            f"foreground {state}: {self.n_stars} stars just behind {self.d_min:g} pc show "
            f"{self.extinction:.3g} ± {self.extinction_err:.2g} mag in front of it (limit {self.limit:.3g} mag)"
        )


def check_foreground(grid: Grid, distance: np.ndarray, extinction: np.ndarray) -> ForegroundCheck | None:
    """Estimate the extinction in front of ``grid.d_min`` from the stars behind it, and whether it is empty.

    Parameters
    ----------
    grid : Grid
        The training grid; None is returned when it has no ghost cells.
    distance, extinction : numpy.ndarray
        The stars on the grid: distance (pc) and extinction (mag).

    Returns
    -------
    ForegroundCheck or None
        None without ghost cells or with fewer than ``MIN_STARS`` stars in the first ``DEPTH_CELLS`` region cells.

    Notes
    -----
    Siegel's repeated-medians line (``scipy.stats.siegelslopes``) of A against ``d - d_min`` over those stars, so
    that outliers and the stars behind a cloud in the first cells do not move it; its standard error is that of a
    least-squares intercept with the residuals' scale from their median absolute deviation.
    """
    if grid.ghost_cells == 0:
        return None
    d_min = grid.d_min
    far = float(grid.d_edges[min(grid.ghost_cells + DEPTH_CELLS, grid.n_d)])
    distance, extinction = np.asarray(distance, float), np.asarray(extinction, float)
    near = np.flatnonzero((distance >= d_min) & (distance < far))
    if near.size < MIN_STARS:
        return None
    near = near[np.argsort(distance[near], kind="stable")[:MAX_STARS]]
    x, a = distance[near] - d_min, extinction[near]
    slope, intercept = stats.siegelslopes(a, x)
    residual = a - (intercept + slope * x)
    scale = 1.4826 * float(np.median(np.abs(residual - np.median(residual))))
    spread = float(np.sum((x - x.mean()) ** 2))
    err = scale * float(np.sqrt(1.0 / x.size + (x.mean() ** 2 / spread if spread > 0 else np.inf)))
    positive = distance > 0
    limit = EMPTY_FRACTION * float(np.median(extinction[positive] / distance[positive])) * d_min
    return ForegroundCheck(
        d_min=d_min,
        extinction=float(intercept),
        extinction_err=err,
        limit=limit,
        n_stars=int(near.size),
        empty=bool(intercept + 2.0 * err < limit),
    )


def without_empty_foreground(
    grid: Grid, catalog: Catalog, sightlines: Sightlines
) -> tuple[Grid, Sightlines, ForegroundCheck | None]:
    """The grid to train on, the stars' sightlines through it and the check: without ghost cells if it found the
    foreground empty (logged), else ``grid`` and ``sightlines`` as given."""
    used = sightlines.star_index
    check = check_foreground(grid, catalog.distance[used], catalog.extinction[used])
    if check is None or not check.empty:
        return grid, sightlines, check
    logger.info(
        "%s: training without the grid's %d ghost cells (foreground='ghost' keeps them)",
        check.describe(),
        grid.ghost_cells,
    )
    grid = grid.with_ghost_cells(0)
    return grid, Sightlines.from_positions(grid, catalog.l, catalog.b, catalog.distance), check
