"""Fitting a region as a mosaic of tiles (:func:`fit_tiles`): distance layers one after the other, near to far;
for each layer, select every tile's stars (minus the nearer layer's foreground), run the layer's tasks on Dask,
then merge its predictions into the map and into the next layer's foreground. See :mod:`dustgp.tiles`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._version import __version__
from ..catalog import Catalog
from ..grid import DEFAULT_REFINEMENT, Grid
from ..posterior_map import DEFAULT_PERCENTILES, PosteriorMap
from .cluster import _dask_client, _run_layer
from .foreground import _add_foreground, _Foreground, _tile_fit_options
from .geometry import Tile, TileError
from .merge import _Accumulator
from .task import TileJob, TilePrediction, TileStars, TileTask, fit_tile

__all__ = ["fit_tiles"]

logger = logging.getLogger(__name__)


def fit_tiles(
    catalog: Catalog,
    grid: Grid,
    *,
    tiles: Sequence[Tile],
    prediction_grid: Grid | None = None,
    client: Any = None,
    retries: int = 2,
    fit_options: Mapping[str, Any] | None = None,
    predict_options: Mapping[str, Any] | None = None,
    torch_threads: int | None = None,
    task: TileTask | None = None,
) -> PosteriorMap:
    """Fit a region tile by tile on a Dask cluster and merge the tiles into one map.

    Parameters
    ----------
    catalog : Catalog
        All stars of the region; each tile takes those inside its training grid (:meth:`Tile.contains`).
    grid : Grid
        The region's training grid, the one ``tiles`` were planned on.
    tiles : sequence of Tile
        From :func:`plan_tiles`.
    prediction_grid : Grid, optional
        Grid of the merged map; default ``grid.refined()`` (:data:`~dustgp.grid.DEFAULT_REFINEMENT` times finer).
        It must cover the training grid's distances when there is more than one distance layer (far tiles read
        their foreground from it).
    client : None, str, distributed.Client or cluster
        Where to run: None starts (and afterwards closes) a ``LocalCluster(n_workers=2, threads_per_worker=1,
        processes=True)``; a scheduler address (``"tcp://host:8786"``); an existing Client (left open); or a
        cluster object such as a ``dask_jobqueue.SLURMCluster`` (scaled by its owner).
    retries : int
        Times a failed tile task is resubmitted before the call gives up.
    fit_options : mapping, optional
        Keyword arguments of :func:`dustgp.fit` for every tile (e.g. ``inducing_points=1000``, which is per
        tile). The near tiles keep their ghost cells (``foreground="ghost"``; ``"auto"`` is refused: a tile that
        left them out would not fit its neighbours' foreground layout).
    predict_options : mapping, optional
        Keyword arguments of :func:`dustgp.predict` for every tile (``samples``, ``percentiles``,
        ``keep_samples``, ``seed``, ...). Unlike ``predict``, a mosaic keeps no joint samples unless
        ``keep_samples`` is given.
    torch_threads : int, optional
        Torch threads in each task (default: the worker's setting; a LocalCluster's workers get 1).
    task : callable, optional
        ``task(job, stars) -> TilePrediction`` run per tile; default :func:`fit_tile`. Must be importable or
        picklable by the workers.

    Returns
    -------
    PosteriorMap
        On ``prediction_grid``; ``meta["tiles"]`` records each tile's fit (stars, iterations, hyperparameters,
        attempts).

    Raises
    ------
    TileError
        A tile without stars, or a tile whose task still fails after ``retries`` resubmissions (the message
        names the tile and carries the last error).

    Notes
    -----
    Distance layers run one after the other, near to far; the tiles of a layer run in parallel. See the notes
    of :mod:`dustgp.tiles` for the foreground of far tiles and for how summaries are blended. A far tile fitted
    without an explicit ``mean`` starts its mean at log10 median(A_i / (d_i - d_min)) of its foreground-subtracted
    stars, the analogue of :func:`dustgp.fit`'s own start for an integral that begins at the tile's ``d_min``.

    Inducing points, iterations and every other fit option apply per tile: a plan of ``k`` tiles with
    ``inducing_points=M`` uses ``k·M`` inducing points in all.

    Examples
    --------
    >>> tiles = plan_tiles(grid, n_l=4, n_b=2, n_d=2, overlap=3)                        # doctest: +SKIP
    >>> dmap = fit_tiles(catalog, grid, tiles=tiles, fit_options={"inducing_points": 1000},
    ...                  predict_options={"samples": 200, "keep_samples": 20})          # doctest: +SKIP
    >>> from dask_jobqueue import SLURMCluster                                          # doctest: +SKIP
    >>> cluster = SLURMCluster(cores=4, memory="16GB"); cluster.scale(jobs=8)           # doctest: +SKIP
    >>> dmap = fit_tiles(catalog, grid, tiles=tiles, client=cluster)                    # doctest: +SKIP
    """
    if retries < 0:
        raise ValueError(f"retries: expected >= 0, got {retries}")
    if not tiles:
        raise TileError("expected at least one tile")
    fit_options = dict(fit_options or {})
    if fit_options.get("foreground", "ghost") != "ghost":
        raise ValueError("fit_options: foreground must be 'ghost' for a mosaic (one foreground layout for all tiles)")
    predict_options = dict(predict_options or {})
    prediction_grid = grid.refined(DEFAULT_REFINEMENT) if prediction_grid is None else prediction_grid
    q = np.asarray(predict_options.get("percentiles", DEFAULT_PERCENTILES), dtype=float)
    # a mosaic keeps samples only when asked (a custom task may return tiles without them), and every tile then
    # keeps as many; without keep_samples the tiles keep none rather than predict()'s default
    keep = int(predict_options.setdefault("keep_samples", 0))
    task = fit_tile if task is None else task
    ordered = sorted(tiles, key=lambda t: t.index)
    layers = sorted({t.layer for t in ordered})
    for tile in ordered:
        if tile.grid.d_max > grid.d_max + 1e-9 or tile.grid.d_min < grid.d_min - 1e-9:
            raise TileError(f"{tile.name}: its training grid {tile.grid!r} lies outside {grid!r}")

    final = _Accumulator(prediction_grid, q.size, keep)
    foreground: _Foreground | None = None
    records: list[dict[str, Any]] = []
    logger.info("fitting %d tiles in %d distance layer(s) on %r", len(ordered), len(layers), prediction_grid)
    with _dask_client(client) as dask_client:
        for layer in layers:
            work = [
                _prepare(
                    tile,
                    catalog,
                    prediction_grid,
                    foreground,
                    ordered[0].l_centre,
                    fit_options,
                    predict_options,
                    torch_threads,
                )
                for tile in ordered
                if tile.layer == layer
            ]
            logger.info("distance layer %d: submitting %d tiles", layer, len(work))
            results = _run_layer(
                dask_client, task, [(w.tile, w.job, w.stars) for w in work], retries, len(records), len(ordered)
            )
            foreground = _merge_layer(layer, work, results, prediction_grid, foreground, q, final, records)
    return final.to_map(q, _provenance(grid, ordered, fit_options, predict_options, records))


@dataclass(frozen=True)
class _TileWork:
    """One tile's task as submitted: its stars and job, and where its piece sits in the prediction grid."""

    tile: Tile
    job: TileJob
    stars: TileStars
    piece: Grid
    index: tuple[slice, slice, slice]


def _tile_stars(tile: Tile, catalog: Catalog, foreground: _Foreground | None, l_centre: float) -> TileStars:
    """The stars inside ``tile``'s training grid, with their distance uncertainties, parallaxes (and nodes) and
    inflation; a far tile's with the nearer layer's foreground subtracted from their extinction and its spread
    added to their observed sigma (see the notes of :mod:`dustgp.tiles`)."""
    mask = tile.contains(catalog.l, catalog.b, catalog.distance)
    if not mask.any():
        raise TileError(f"{tile.name} holds no star of the catalogue ({len(catalog)} stars)")
    stars = TileStars.from_catalog(catalog.select(mask))
    if tile.layer == 0:
        return stars
    if foreground is None:
        raise TileError(f"{tile.name}: no nearer distance layer to take the foreground from")
    fg_mean, fg_std = foreground.at(tile.grid.d_min, tile.name)
    i_b, i_l = foreground.columns(stars.l, stars.b, l_centre)
    return dataclasses.replace(
        stars,
        extinction=stars.extinction - fg_mean[i_b, i_l],
        extinction_err=np.hypot(stars.extinction_err, fg_std[i_b, i_l]),
    )


def _prepare(
    tile: Tile,
    catalog: Catalog,
    prediction_grid: Grid,
    foreground: _Foreground | None,
    l_centre: float,
    fit_options: dict[str, Any],
    predict_options: dict[str, Any],
    torch_threads: int | None,
) -> _TileWork:
    """``tile``'s stars, its piece of the prediction grid and its job."""
    stars = _tile_stars(tile, catalog, foreground, l_centre)
    piece, index = tile.piece(prediction_grid)
    job = TileJob(
        index=tile.index,
        name=tile.name,
        grid=tile.grid.to_dict(),
        piece=piece.to_dict(),
        fit_options=_tile_fit_options(tile, stars, fit_options),
        predict_options=predict_options,
        torch_threads=torch_threads,
    )
    return _TileWork(tile, job, stars, piece, index)


def _merge_layer(
    layer: int,
    work: list[_TileWork],
    results: dict[int, tuple[TilePrediction, int]],
    prediction_grid: Grid,
    foreground: _Foreground | None,
    q: np.ndarray,
    final: _Accumulator,
    records: list[dict[str, Any]],
) -> _Foreground:
    """Add one distance layer's predictions to the map ``final`` (far tiles shifted by their foreground) and their
    facts to ``records``; return the layer's extinction, the foreground of the next layer."""
    layer_acc = _Accumulator(prediction_grid, q.size, 0)
    d_ranges = set()
    for w in work:
        tile, index = w.tile, w.index
        prediction, attempts = results[tile.index]
        if tile.layer > 0:
            assert foreground is not None
            fg_mean, fg_std = foreground.at(w.piece.d_edges[0], tile.name)
            prediction = _add_foreground(prediction, fg_mean[index[1:]], fg_std[index[1:]], q)
        try:
            layer_acc.add(index, tile.piece_weights(prediction_grid, index, axes="lb"), prediction)
            final.add(index, tile.piece_weights(prediction_grid, index), prediction)
        except TileError as exc:
            raise TileError(f"{tile.name}: {exc}") from exc
        d_ranges.add((index[0].start, index[0].stop))
        records.append(
            {
                "index": tile.index,
                "name": tile.name,
                "position": list(tile.position),
                "training_grid": tile.grid.to_dict(),
                "core": [list(c) for c in tile.core],
                "stars_selected": len(w.stars),
                "attempts": attempts,
                **prediction.info,
            }
        )
    if len(d_ranges) != 1:
        raise TileError(f"distance layer {layer}: its tiles cover different distance ranges {d_ranges}")
    return _Foreground.from_layer(layer_acc, d_ranges.pop())


def _provenance(
    grid: Grid,
    ordered: list[Tile],
    fit_options: dict[str, Any],
    predict_options: dict[str, Any],
    records: list[dict[str, Any]],
) -> dict[str, Any]:
    """The merged map's ``meta``: version, options, training grid, the tiling and each tile's record."""
    return {
        "dustgp_version": __version__,
        "config": _jsonable(fit_options),
        "predict_options": _jsonable(predict_options),
        "seed": int(predict_options.get("seed", 0)),
        "training_grid": grid.to_dict(),
        "tiling": {
            "counts": list(ordered[0].counts),
            "tiles": len(ordered),
            "blend": "cosine taper; means and stds weighted-averaged; percentiles blended (approximation)",
            "foreground": "far tiles: per-star subtraction of the nearer layer's extinction at d_min, "
            "variance added to sigma^2",
        },
        "tiles": records,
        "hyperparameters": {str(r["index"]): r.get("hyperparameters") for r in records},
    }


def _jsonable(options: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in options.items():
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            value = dataclasses.asdict(value)
        if isinstance(value, tuple | np.ndarray):
            value = np.asarray(value).tolist()
        out[key] = value if isinstance(value, str | int | float | bool | list | dict | type(None)) else repr(value)
    return out
