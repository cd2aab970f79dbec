"""Merging tiles into one map: weighted sums of the tiles' summaries (:class:`_Accumulator`) and
:func:`merge_tiles`. The blending rule and what it means for each summary are in the notes of
:mod:`dustgp.tiles`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..grid import Grid
from ..posterior_map import DEFAULT_PERCENTILES, SUMMARIES, PosteriorMap
from .geometry import Tile, TileError
from .task import TilePrediction

__all__ = ["merge_tiles"]


class _Accumulator:
    """Weighted sums of tile summaries on a grid, and the sum of weights."""

    def __init__(self, grid: Grid, n_q: int, n_samples: int) -> None:
        shape = grid.shape
        self.grid = grid
        self.weight = np.zeros(shape)
        self.sums = {s.name: np.zeros((n_q, *shape) if s.per_level else shape) for s in SUMMARIES}
        self.samples = np.zeros((n_samples, *shape)) if n_samples else None
        # where the stars constrain the map: a cell is constrained when a tile that covers it with weight says so;
        # a column's reliable range runs from the nearest to the farthest star of the tiles over it. Kept only
        # while every tile knows them (None as soon as one does not).
        self.coverage: np.ndarray | None = np.zeros(shape, dtype=bool)
        self.reliable: np.ndarray | None = np.full((2, grid.n_b, grid.n_l), np.nan)

    def add(self, index: tuple[slice, slice, slice], weight: np.ndarray, prediction: TilePrediction) -> None:
        sd, sb, sl = index
        self.weight[sd, sb, sl] += weight
        for name, total in self.sums.items():
            value = getattr(prediction, name)
            if value.shape[-3:] != weight.shape:
                raise TileError(f"{name}: expected a piece of shape {weight.shape}, got {value.shape}")
            total[..., sd, sb, sl] += weight * value
        if self.samples is not None:
            if prediction.density_samples is None or prediction.density_samples.shape[0] != self.samples.shape[0]:
                raise TileError(f"density_samples: expected {self.samples.shape[0]} samples from every tile")
            self.samples[:, sd, sb, sl] += weight * prediction.density_samples
        self._add_flags(index, weight, prediction)

    def _add_flags(self, index: tuple[slice, slice, slice], weight: np.ndarray, prediction: TilePrediction) -> None:
        sd, sb, sl = index
        if prediction.coverage is None or prediction.reliable_distance is None:
            self.coverage = self.reliable = None
        if self.coverage is None or self.reliable is None:
            return
        if prediction.coverage.shape != weight.shape:
            raise TileError(f"coverage: expected a piece of shape {weight.shape}, got {prediction.coverage.shape}")
        if prediction.reliable_distance.shape != (2, *weight.shape[1:]):
            raise TileError(
                f"reliable_distance: expected shape {(2, *weight.shape[1:])}, got {prediction.reliable_distance.shape}"
            )
        self.coverage[sd, sb, sl] |= prediction.coverage & (weight > 0)
        near, far = self.reliable[0, sb, sl], self.reliable[1, sb, sl]
        self.reliable[0, sb, sl] = np.fmin(near, prediction.reliable_distance[0])
        self.reliable[1, sb, sl] = np.fmax(far, prediction.reliable_distance[1])

    def covered(self) -> np.ndarray:
        return self.weight > 0

    def normalised(self, name: str) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.sums[name] / self.weight

    def to_map(self, percentiles: np.ndarray, meta: dict[str, Any]) -> PosteriorMap:
        """The normalised sums as a map; every cell must have received weight."""
        if not self.covered().all():
            missing = np.argwhere(~self.covered())
            raise TileError(f"{len(missing)} cells of {self.grid!r} have no tile; first (d, b, l) {missing[0]}")
        samples = None if self.samples is None else (self.samples / self.weight).astype(np.float32)
        return PosteriorMap(
            grid=self.grid,
            percentiles=percentiles,
            **{s.name: self.normalised(s.name) for s in SUMMARIES},
            density_samples=samples,
            meta=meta,
            coverage=self.coverage,
            reliable_distance=self.reliable,
        )


def merge_tiles(
    prediction_grid: Grid,
    tiles: Sequence[Tile],
    predictions: Sequence[TilePrediction],
    *,
    percentiles: Sequence[float] = DEFAULT_PERCENTILES,
    meta: Mapping[str, Any] | None = None,
) -> PosteriorMap:
    """Blend per-tile predictions into one map with the tiles' weights (see the notes of :mod:`dustgp.tiles`).

    Parameters
    ----------
    prediction_grid : Grid
        The grid of the merged map.
    tiles : sequence of Tile
    predictions : sequence of TilePrediction
        One per tile, on that tile's :meth:`Tile.piece` of ``prediction_grid``, with extinction from the Sun
        (foreground included).
    percentiles : sequence of float
        Levels (0-100) of the predictions' percentile arrays.
    meta : mapping, optional
        Provenance stored in the map.

    Returns
    -------
    PosteriorMap

    Raises
    ------
    TileError
        A piece of the wrong shape, or a cell of the grid that no tile covers.
    """
    if len(tiles) != len(predictions):
        raise TileError(f"expected one prediction per tile, got {len(predictions)} for {len(tiles)} tiles")
    if not tiles:
        raise TileError("expected at least one tile")
    q = np.asarray(percentiles, dtype=float)
    first = predictions[0].density_samples
    acc = _Accumulator(prediction_grid, q.size, 0 if first is None else first.shape[0])
    for tile, prediction in zip(tiles, predictions, strict=True):
        _, index = tile.piece(prediction_grid)
        try:
            acc.add(index, tile.piece_weights(prediction_grid, index), prediction)
        except TileError as exc:
            raise TileError(f"{tile.name}: {exc}") from exc
    return acc.to_map(q, dict(meta or {}))
