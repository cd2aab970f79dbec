"""The foreground of far tiles: a nearer distance layer's merged extinction (:class:`_Foreground`), its per-star
subtraction from a far tile's stars and its addition to the far tile's prediction (:func:`_add_foreground`), and a
far tile's starting mean density (:func:`_tile_fit_options`). The equations are in the notes of
:mod:`dustgp.tiles`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

from ..grid import Grid
from .geometry import Tile, TileError, _unwrap
from .merge import _Accumulator
from .task import TilePrediction, TileStars

__all__: list[str] = []


@dataclass(frozen=True)
class _Foreground:
    """A distance layer's merged extinction (mean, std) at cell edges of the prediction grid, per column."""

    grid: Grid
    d_edges: np.ndarray  # (n_k + 1,)
    mean: np.ndarray  # (n_k + 1, n_b, n_l), mag
    std: np.ndarray  # (n_k + 1, n_b, n_l), mag

    @classmethod
    def from_layer(cls, acc: _Accumulator, d_cells: tuple[int, int]) -> _Foreground:
        k0, k1 = d_cells
        grid = acc.grid
        rho = acc.normalised("density_mean")[k0:k1]
        a_mean = acc.normalised("extinction_mean")[k0:k1]
        a_std = acc.normalised("extinction_std")[k0:k1]
        if not np.all(np.isfinite(a_mean)):
            raise TileError(f"the merged layer does not cover every column of {grid!r}")
        # the near edge of the layer's first cell: extinction is linear within a cell, so subtract that cell's
        # mean density times its length (exactly 0 at the Sun); its spread is taken as the first cell's
        near_mean = a_mean[0] - rho[0] * grid.path_lengths[k0]
        return cls(
            grid=grid,
            d_edges=grid.d_edges[k0 : k1 + 1],
            mean=np.concatenate([near_mean[None], a_mean]),
            std=np.concatenate([a_std[:1], a_std]),
        )

    def at(self, d: float, what: str) -> tuple[np.ndarray, np.ndarray]:
        """Mean and std of extinction (mag) at distance ``d`` (pc), shape ``(n_b, n_l)``."""
        lo, hi = self.d_edges[0], self.d_edges[-1]
        if not lo - 1e-9 <= d <= hi + 1e-9:
            raise TileError(
                f"{what}: needs the foreground at {d:g} pc, outside the nearer layer's prediction ({lo:g}..{hi:g} "
                "pc); the prediction grid must cover the training grid's distances"
            )
        k = int(np.clip(np.searchsorted(self.d_edges, d, side="right"), 1, self.d_edges.size - 1))
        t = (d - self.d_edges[k - 1]) / (self.d_edges[k] - self.d_edges[k - 1])
        mean = (1 - t) * self.mean[k - 1] + t * self.mean[k]
        std = (1 - t) * self.std[k - 1] + t * self.std[k]
        return mean, std

    def columns(self, l: np.ndarray, b: np.ndarray, l_centre: float) -> tuple[np.ndarray, np.ndarray]:
        """Prediction-grid column ``(i_b, i_l)`` holding each position (deg, deg); the nearest column when off the
        grid's sky, with longitudes unwrapped around ``l_centre`` (deg) to tell below the grid from above it."""
        grid = self.grid
        l = np.asarray(l, dtype=float)
        l_u = _unwrap(l, l_centre)
        lo = float(_unwrap(grid.l_edges[0], l_centre))
        hi = lo + float(grid.l_edges[-1] - grid.l_edges[0])
        # a position off the grid's sky moves to the centre of the nearest edge column (a centre, not the edge
        # itself, so that rounding cannot take it off the grid); positions on the grid stay where they are
        l_on = np.where(l_u < lo, grid.l_centers[0], np.where(l_u > hi, grid.l_centers[-1], l))
        b_on = np.clip(b, grid.b_centers[0], grid.b_centers[-1])
        _, i_b, i_l = grid.locate(l_on, b_on, np.full(np.shape(b_on), grid.d_centers[-1]))
        return i_b, i_l


def _add_foreground(prediction: TilePrediction, mean: np.ndarray, std: np.ndarray, q: np.ndarray) -> TilePrediction:
    """Shift a far tile's extinction by a foreground (mean, std per column; see the notes of :mod:`dustgp.tiles`)."""
    total_std = np.hypot(prediction.extinction_std, std)
    z = np.array([NormalDist().inv_cdf(p) for p in np.clip(q / 100.0, 1e-9, 1 - 1e-9)])
    widen = z.reshape(-1, 1, 1, 1) * (total_std - prediction.extinction_std)
    return dataclasses.replace(
        prediction,
        extinction_mean=prediction.extinction_mean + mean,
        extinction_std=total_std,
        extinction_percentiles=prediction.extinction_percentiles + mean + widen,
    )


def _tile_fit_options(tile: Tile, stars: TileStars, fit_options: dict[str, Any]) -> dict[str, Any]:
    """A tile's fit options: the near tiles keep their ghost cells, and a far tile gets an initial mean density
    from its own sightline segments, unless either is given.

    A near tile left alone would ask its own stars whether the foreground is empty (``foreground="auto"``) and
    might drop its ghost cells where its neighbours keep theirs; the merged map has one foreground layout.

    :func:`dustgp.fit` starts the mean at log10 median(A_i / d_i), the right guess when the integral starts at the
    Sun. A far tile's foreground-subtracted extinction accumulates from its ``d_min`` only, and dividing it by the
    whole distance would start the mean far too low.
    """
    fit_options = {"foreground": "ghost", **fit_options}
    config = fit_options.get("config")
    if tile.layer == 0 or fit_options.get("mean") is not None or getattr(config, "mean", None) is not None:
        return fit_options
    ratio = stars.extinction / np.maximum(stars.distance - tile.grid.d_min, 1e-9)
    positive = ratio[(ratio > 0) & (stars.distance > tile.grid.d_min)]
    if positive.size == 0:
        return fit_options
    return {**fit_options, "mean": float(np.log10(np.median(positive)))}
