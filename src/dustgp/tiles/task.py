"""What one tile's task gets, does and returns: the stars (:class:`TileStars`) and the rest of the job
(:class:`TileJob`) in, the default task (:func:`fit_tile`: fit and predict), the summaries
(:class:`TilePrediction`) out.

Tasks ship plain numpy arrays both ways (star arrays scattered once per tile, grids as dictionaries, results as
:class:`TilePrediction`); no torch object crosses a process boundary. The stars carry everything of the catalogue
that the likelihood reads (distance uncertainties, parallaxes and their posteriors' nodes, the inflation of
sigma_A), so that a tile's fit uses the likelihood a single fit of the same stars would.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..catalog import PARALLAX_LENGTH_SCALE, Catalog
from ..grid import Grid
from ..posterior_map import SUMMARIES, PosteriorMap

__all__ = ["TileJob", "TilePrediction", "TileStars", "TileTask", "fit_tile"]


@dataclass(frozen=True)
class TileStars:
    """The stars of one tile as plain arrays, foreground already subtracted: a :class:`~dustgp.catalog.Catalog`'s
    columns, which :meth:`from_catalog` takes and :meth:`to_catalog` gives back.

    Attributes
    ----------
    l, b : numpy.ndarray, shape (n,)
        deg.
    distance : numpy.ndarray, shape (n,)
        pc (from parallaxes: the median of each star's posterior).
    extinction : numpy.ndarray, shape (n,)
        mag, a far tile's with the nearer layer's foreground subtracted.
    extinction_err : numpy.ndarray, shape (n,)
        mag: the catalogue's observed uncertainty (before its distance inflation), a far tile's with the
        foreground's spread added in quadrature.
    distance_err : numpy.ndarray or None
        pc (from parallaxes: half the 16-84% width of the posterior).
    parallax, parallax_err : numpy.ndarray or None
        mas.
    parallax_length_scale : float
        L of the parallax posteriors' prior, pc.
    inflation : numpy.ndarray or None
        The catalogue's distance term of sigma_A, mag (the ``"inflate"`` treatment adds it in quadrature).
    row_index : numpy.ndarray or None
        The input rows of the stars.
    distance_node_cache : dict of int to numpy.ndarray
        The parallax posteriors' nodes already tabulated, pc, shape (n, k), by k
        (:attr:`~dustgp.catalog.Catalog.distance_node_cache`): the task tabulates none again.
    """

    l: np.ndarray
    b: np.ndarray
    distance: np.ndarray
    extinction: np.ndarray
    extinction_err: np.ndarray
    distance_err: np.ndarray | None = None
    parallax: np.ndarray | None = None
    parallax_err: np.ndarray | None = None
    parallax_length_scale: float = PARALLAX_LENGTH_SCALE
    inflation: np.ndarray | None = None
    row_index: np.ndarray | None = None
    distance_node_cache: dict[int, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.l.size

    @classmethod
    def from_catalog(cls, catalog: Catalog) -> TileStars:
        """The stars of ``catalog`` (a tile's selection) with all that their likelihood reads, as plain arrays."""
        return cls(
            l=np.asarray(catalog.l),
            b=np.asarray(catalog.b),
            distance=np.asarray(catalog.distance),
            extinction=np.asarray(catalog.extinction, dtype=float),
            extinction_err=np.asarray(catalog.extinction_err_observed, dtype=float),
            distance_err=catalog.distance_err,
            parallax=catalog.parallax,
            parallax_err=catalog.parallax_err,
            parallax_length_scale=catalog.parallax_length_scale,
            inflation=catalog.inflation,
            row_index=catalog.row_index,
            distance_node_cache=dict(catalog.distance_node_cache),
        )

    def to_catalog(self) -> Catalog:
        """The tile's stars as a :class:`~dustgp.catalog.Catalog` (its strict constructor checks them again)."""
        return Catalog(
            self.l,
            self.b,
            self.distance,
            self.extinction,
            self.extinction_err,
            distance_err=self.distance_err,
            parallax=self.parallax,
            parallax_err=self.parallax_err,
            parallax_length_scale=self.parallax_length_scale,
            distance_node_cache=self.distance_node_cache,
            inflation=self.inflation,
            row_index=self.row_index,
        )


@dataclass(frozen=True)
class TileJob:
    """Everything a task needs besides the stars, as plain data.

    Attributes
    ----------
    index : int
    name : str
    grid : dict
        Training grid (:meth:`Grid.to_dict`).
    piece : dict
        The tile's piece of the prediction grid (:meth:`Grid.to_dict`).
    fit_options, predict_options : dict
        Keyword arguments of :func:`dustgp.fit` and :func:`dustgp.predict`.
    torch_threads : int or None
        Torch intra-op threads for the task (None leaves the worker's setting).
    """

    index: int
    name: str
    grid: dict[str, Any]
    piece: dict[str, Any]
    fit_options: dict[str, Any] = field(default_factory=dict)
    predict_options: dict[str, Any] = field(default_factory=dict)
    torch_threads: int | None = None


@dataclass
class TilePrediction:
    """A tile's posterior summaries on its piece of the prediction grid, as numpy arrays (see :class:`PosteriorMap`).

    Arrays have the piece's shape ``(n_d, n_b, n_l)`` (percentiles and samples with a leading axis). Extinction
    is integrated from the piece's near edge: from the Sun for the nearest layer, from the piece's first cell for
    farther layers until :func:`fit_tiles` adds the foreground. ``coverage`` (cells the tile's stars constrain)
    and ``reliable_distance`` (``(2, n_b, n_l)``: each column's nearest and farthest star of the tile, pc) are
    those of the tile's map, None when unknown. ``info`` holds JSON-ready facts about the fit.
    """

    density_mean: np.ndarray
    density_std: np.ndarray
    density_percentiles: np.ndarray
    extinction_mean: np.ndarray
    extinction_std: np.ndarray
    extinction_percentiles: np.ndarray
    density_samples: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)
    coverage: np.ndarray | None = None
    reliable_distance: np.ndarray | None = None

    @classmethod
    def from_map(cls, dmap: PosteriorMap, n_d: int | None = None, info: dict[str, Any] | None = None) -> TilePrediction:
        """The last ``n_d`` distance cells of a map (all by default) as a :class:`TilePrediction`."""
        take = slice(dmap.grid.n_d - (dmap.grid.n_d if n_d is None else n_d), None)
        samples = dmap.density_samples
        return cls(
            **{s.name: np.asarray(getattr(dmap, s.name)[..., take, :, :]) for s in SUMMARIES},
            density_samples=None if samples is None else np.asarray(samples[:, take]),
            info=dict(info or {}),
            coverage=None if dmap.coverage is None else np.asarray(dmap.coverage[take]),
            reliable_distance=None if dmap.reliable_distance is None else np.asarray(dmap.reliable_distance),
        )


def fit_tile(job: TileJob, stars: TileStars) -> TilePrediction:
    """The task run for each tile: fit its stars on its training grid and predict on its piece.

    Runs in a worker process; takes and returns plain data only.
    """
    import torch

    from ..fitting import fit

    previous_threads = torch.get_num_threads()
    if job.torch_threads is not None:
        torch.set_num_threads(job.torch_threads)
    try:
        started = time.perf_counter()
        catalog = stars.to_catalog()
        piece = Grid.from_dict(job.piece)
        result = fit(catalog, Grid.from_dict(job.grid), **{"progress": False, **job.fit_options})
        dmap = result.predict(piece, **{"progress": False, **job.predict_options})
        info = {
            "stars": dict(result.stars),
            "distance_uncertainty": getattr(result.likelihood, "distance_treatment", None),
            "iterations": int(result.iterations),
            "stopped_by": result.stopped_by,
            "fit_seconds": float(result.seconds),
            "final_loss": float(result.losses[-1]) if result.losses.size else None,
            "hyperparameters": result.hyperparameters(),
            "task_seconds": time.perf_counter() - started,
        }
        # predict() adds ghost cells to a piece that has none when the training grid has them; the piece's
        # own cells are the last ones along distance either way
        return TilePrediction.from_map(dmap, piece.n_d, info)
    finally:
        if job.torch_threads is not None:
            torch.set_num_threads(previous_threads)


#: A tile's task: ``task(job, stars) -> TilePrediction`` (:func:`fit_tile` by default).
TileTask = Callable[[TileJob, TileStars], TilePrediction]
