"""Is the foreground empty? What the stars just behind d_min say of the dust in front of it.

The training grid's foreground ghost cells hold the dust in front of ``d_min`` as cells of the same Gaussian
process as the region (docs: Method §2). Where the stars see next to no dust in front of ``d_min``, the ghost cells'
log density must lie several dex below the region's within a scale length of it. A stationary prior can only do
that with a large scale factor and long scale lengths; the region's field then comes out too smooth, and its bands,
pinned by many stars, narrower than its misfit (measured on the stiff skies of ``benchmarks/bench_stiff.py``: docs,
Design notes, "An empty foreground").

So :func:`dustgp.fit` (``foreground="auto"``, the default) fits without the ghost cells when
:func:`check_foreground` finds the foreground empty: its extinction, the intercept at ``d_min`` of a line of the
stars' extinction against distance over the first region cells (weighted by 1/σ², outliers clipped), lies (with
twice its standard error) below :data:`EMPTY_FRACTION` of what the region's mean density would put in front of
``d_min``.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

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
#: Region cells behind d_min whose stars estimate the foreground.
DEPTH_CELLS = 2


@dataclass(frozen=True)
class ForegroundCheck:
    """The foreground extinction that the stars just behind ``d_min`` show, and whether it counts as empty.

    Attributes
    ----------
    d_min : float
        Near edge of the region, pc.
    extinction, extinction_err : float
        Extinction in front of ``d_min`` (the intercept of the clipped, weighted line of A against d - d_min) and
        its standard error, mag.
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


def check_foreground(
    grid: Grid, distance: np.ndarray, extinction: np.ndarray, extinction_err: np.ndarray
) -> ForegroundCheck | None:
    """Estimate the extinction in front of ``grid.d_min`` from the stars behind it, and whether it is empty.

    Parameters
    ----------
    grid : Grid
        The training grid; None is returned when it has no ghost cells.
    distance, extinction, extinction_err : numpy.ndarray
        The stars on the grid: distance (pc), extinction and its quoted uncertainty (mag).

    Returns
    -------
    ForegroundCheck or None
        None without ghost cells or with fewer than ``MIN_STARS`` stars in the first ``DEPTH_CELLS`` region cells.

    Notes
    -----
    The line ``A = a + b (d - d_min)`` through those stars by weighted least squares (weights 1/σ²), refitted with
    the stars more than three times the residuals' robust scale (in units of their σ, at least 1) away left out, so
    that outliers and the stars behind a cloud in the first cells do not move it. Its standard error is the
    least-squares one, scaled up by that robust scale where the stars scatter beyond their quoted σ. The weights
    let the stars right behind ``d_min`` pin the intercept where their σ is small (σ proportional to A); an
    unweighted line is spread by the region's own dust across the cells (docs: Design notes, "An empty
    foreground").
    """
    if grid.ghost_cells == 0:
        return None
    d_min = grid.d_min
    far = float(grid.d_edges[min(grid.ghost_cells + DEPTH_CELLS, grid.n_d)])
    distance, extinction = np.asarray(distance, float), np.asarray(extinction, float)
    near = (distance >= d_min) & (distance < far)
    if near.sum() < MIN_STARS:
        return None
    x, a = distance[near] - d_min, extinction[near]
    weight = 1.0 / np.maximum(np.asarray(extinction_err, float)[near], 1e-9) ** 2
    intercept, err = _robust_intercept(x, a, weight)
    positive = distance > 0
    limit = EMPTY_FRACTION * float(np.median(extinction[positive] / distance[positive])) * d_min
    return ForegroundCheck(
        d_min=d_min,
        extinction=intercept,
        extinction_err=err,
        limit=limit,
        n_stars=int(near.sum()),
        empty=bool(intercept + 2.0 * err < limit),
    )


def _robust_intercept(x: np.ndarray, a: np.ndarray, weight: np.ndarray, rounds: int = 10) -> tuple[float, float]:
    """Intercept at x = 0 of a weighted, clipped least-squares line and its standard error (see check_foreground)."""
    design = np.stack([np.ones_like(x), x], axis=1)
    kept = np.ones(x.size, bool)
    for _ in range(rounds):
        w = weight[kept]
        normal = design[kept].T @ (w[:, None] * design[kept])
        coef = np.linalg.lstsq(normal, design[kept].T @ (w * a[kept]), rcond=None)[0]
        z = (a - design @ coef) * np.sqrt(weight)
        scale = max(1.0, 1.4826 * float(np.median(np.abs(z[kept]))))
        clipped = np.abs(z) < 3.0 * scale
        if clipped.sum() < MIN_STARS or np.array_equal(clipped, kept):
            break
        kept = clipped
    covariance = np.linalg.pinv(normal) * scale**2
    return float(coef[0]), float(np.sqrt(max(covariance[0, 0], 0.0)))


def without_empty_foreground(
    grid: Grid, catalog: Catalog, sightlines: Sightlines
) -> tuple[Grid, Sightlines, ForegroundCheck | None]:
    """The grid to train on, the stars' sightlines through it and the check: without ghost cells if it found the
    foreground empty (logged), else ``grid`` and ``sightlines`` as given."""
    used = sightlines.star_index
    check = check_foreground(grid, catalog.distance[used], catalog.extinction[used], catalog.extinction_err[used])
    if check is None or not check.empty:
        return grid, sightlines, check
    logger.info(
        "%s: training without the grid's %d ghost cells (foreground='ghost' keeps them)",
        check.describe(),
        grid.ghost_cells,
    )
    grid = grid.with_ghost_cells(0)
    return grid, Sightlines.from_positions(grid, catalog.l, catalog.b, catalog.distance), check
