"""A finished 3D dust map: posterior summaries of density and extinction on a grid.

A :class:`PosteriorMap` is what :meth:`dustgp.Fit.predict` returns and what :func:`dustgp.io.read_map` reads back.
Density (mag/pc) lives in cells; extinction (mag) is integrated from the Sun to each cell's *far* edge, sample by
sample (percentiles of integrated samples, never integrals of percentiles, docs: Method §6). Arrays are ordered
``(distance, b, l)``; ghost cells are the first ``grid.ghost_cells`` distance cells.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import astropy.units as u
import numpy as np

from .grid import Grid

__all__ = [
    "DEFAULT_KEEP_SAMPLES",
    "DENSITY_UNIT",
    "EXTINCTION_UNIT",
    "SUMMARIES",
    "PosteriorMap",
    "SummaryField",
    "keep_samples_for",
    "register_product",
]

DEFAULT_PERCENTILES = (2.5, 16.0, 50.0, 84.0, 97.5)

#: Unit of the extinction density, as written into every file.
DENSITY_UNIT = "mag / pc"
#: Unit of the extinction, as written into every file.
EXTINCTION_UNIT = "mag"


class SummaryField(NamedTuple):
    """One posterior-summary array of a map: attribute name, description and unit."""

    name: str
    long_name: str
    unit: str

    @property
    def per_level(self) -> bool:
        """Whether the array has a leading percentile-level axis, shape ``(n_q, n_d, n_b, n_l)``."""
        return self.name.endswith("percentiles")


#: The summary arrays of a map, in file order: the one list behind :class:`PosteriorMap`'s checks and the file formats
#: (:mod:`dustgp.io`). Extinction is integrated from the Sun to each cell's far edge.
SUMMARIES = (
    SummaryField("density_mean", "posterior mean of the extinction density", DENSITY_UNIT),
    SummaryField("density_std", "posterior standard deviation of the extinction density", DENSITY_UNIT),
    SummaryField("density_percentiles", "posterior percentiles of the extinction density", DENSITY_UNIT),
    SummaryField("extinction_mean", "posterior mean extinction from the Sun to the cell's far edge", EXTINCTION_UNIT),
    SummaryField("extinction_std", "posterior std of extinction from the Sun to the cell's far edge", EXTINCTION_UNIT),
    SummaryField(
        "extinction_percentiles",
        "posterior percentiles of the extinction from the Sun to the cell's far edge",
        EXTINCTION_UNIT,
    ),
)

#: Joint posterior samples a map keeps unless told otherwise, so that ``query(mode="samples")`` and
#: ``"random_sample"`` work on any map (as many as Edenhofer et al. 2023 publish, a modest count next to the 200
#: drawn for the summaries). Cost: one float32 per cell per sample, 4 bytes uncompressed; in NetCDF (zlib) about
#: 3.4 bytes on the demo map, so 12 samples add about 44 MB to a 100 × 100 × 107-cell map (the summaries take
#: about 56 MB).
DEFAULT_KEEP_SAMPLES = 12


def keep_samples_for(keep_samples: int | None, samples: int) -> int:
    """Samples to keep: ``keep_samples``, or :data:`DEFAULT_KEEP_SAMPLES` (at most ``samples``) when ``None``."""
    return min(DEFAULT_KEEP_SAMPLES, samples) if keep_samples is None else int(keep_samples)


#: What a map does that lives in the products layer, registered there on import: ``"query"`` (a
#: :class:`dustgp.query.DustMapQuery` from a map), ``"write"`` and ``"read"`` (:func:`dustgp.io.write_map`,
#: :func:`dustgp.io.read_map`). The record imports nothing above the grid; the package root imports both
#: modules, so the hooks are in place whenever ``dustgp`` is (as astropy's ``Table.read``/``write`` registry).
_PRODUCTS: dict[str, Callable[..., Any]] = {}


def register_product(name: str, function: Callable[..., Any]) -> None:
    """Register the function behind :meth:`PosteriorMap.query` (``"query"``), :meth:`~PosteriorMap.save` (``"write"``)
    or :meth:`~PosteriorMap.load` (``"read"``)."""
    if name not in ("query", "write", "read"):
        raise ValueError(f"name: expected 'query', 'write' or 'read', got {name!r}")
    _PRODUCTS[name] = function


def _product(name: str) -> Callable[..., Any]:
    try:
        return _PRODUCTS[name]
    except KeyError:
        raise RuntimeError(
            f"no {name!r} function is registered for PosteriorMap; import dustgp (which imports dustgp.io and "
            "dustgp.query) before using a map's methods"
        ) from None


@dataclass(eq=False)
class PosteriorMap:
    """Posterior summaries of a 3D dust map on a :class:`~dustgp.grid.Grid`.

    Attributes
    ----------
    grid : Grid
        The prediction grid (ghost cells included).
    percentiles : numpy.ndarray, shape (n_q,)
        Percentile levels (0-100) of the stored summaries.
    density_mean, density_std : numpy.ndarray, shape (n_d, n_b, n_l)
        Posterior mean and standard deviation of the density, mag/pc.
    density_percentiles : numpy.ndarray, shape (n_q, n_d, n_b, n_l)
        Posterior percentiles of the density, mag/pc.
    extinction_mean, extinction_std : numpy.ndarray, shape (n_d, n_b, n_l)
        Extinction from the Sun to each cell's far edge, mag.
    extinction_percentiles : numpy.ndarray, shape (n_q, n_d, n_b, n_l)
    density_samples : numpy.ndarray or None, shape (n_samples, n_d, n_b, n_l)
        Joint posterior samples of the density, mag/pc, when kept (``keep_samples`` in prediction).
    meta : dict
        Provenance: package version, configuration, seed, hyperparameters (all JSON-serialisable).
    coverage : numpy.ndarray of bool or None, shape (n_d, n_b, n_l)
        True in cells the stars constrain; elsewhere (beyond the farthest star of a column, columns without stars,
        outside the training grid) the map is the prior's, with a band to match
        (:func:`dustgp.prediction.constrained_cells`). None when unknown.
    reliable_distance : numpy.ndarray or None, shape (2, n_b, n_l)
        Nearest and farthest star of each column, pc (NaN without stars), as Bayestar's ``DM_reliable_min`` /
        ``DM_reliable_max`` behind ``dustmaps``' ``reliable_dist`` flag. None when unknown.
    """

    grid: Grid
    percentiles: np.ndarray
    density_mean: np.ndarray
    density_std: np.ndarray
    density_percentiles: np.ndarray
    extinction_mean: np.ndarray
    extinction_std: np.ndarray
    extinction_percentiles: np.ndarray
    density_samples: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    coverage: np.ndarray | None = None
    reliable_distance: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.percentiles = np.asarray(self.percentiles, dtype=float)
        if self.coverage is not None:
            self.coverage = np.asarray(self.coverage, dtype=bool)
            if self.coverage.shape != self.grid.shape:
                raise ValueError(f"coverage: expected shape {self.grid.shape}, got {self.coverage.shape}")
        if self.reliable_distance is not None:
            self.reliable_distance = np.asarray(self.reliable_distance, dtype=float)
            expected_reliable = (2, self.grid.n_b, self.grid.n_l)
            if self.reliable_distance.shape != expected_reliable:
                raise ValueError(
                    f"reliable_distance: expected shape {expected_reliable}, got {self.reliable_distance.shape}"
                )
        for summary in SUMMARIES:
            expected = (self.percentiles.size, *self.grid.shape) if summary.per_level else self.grid.shape
            if getattr(self, summary.name).shape != expected:
                raise ValueError(f"{summary.name}: expected shape {expected}, got {getattr(self, summary.name).shape}")
        if self.density_samples is not None and self.density_samples.shape[1:] != self.grid.shape:
            raise ValueError(
                f"density_samples: expected shape (n, {self.grid.shape}), got {self.density_samples.shape}"
            )

    # ----- summaries --------------------------------------------------------------------------------------
    @property
    def n_samples(self) -> int:
        """Number of stored joint samples (0 when none were kept)."""
        return 0 if self.density_samples is None else self.density_samples.shape[0]

    def extinction_samples(self) -> np.ndarray:
        """Joint samples of extinction to each cell's far edge, mag, shape ``(n_samples, n_d, n_b, n_l)``."""
        if self.density_samples is None:
            raise ValueError("this map keeps no posterior samples; predict with keep_samples > 0")
        return np.cumsum(self.density_samples * self.grid.path_lengths[None, :, None, None], axis=1)

    def _pick(
        self,
        q: float | Sequence[float] | None,
        mean: np.ndarray,
        table: np.ndarray,
        samples: np.ndarray | None,
    ) -> np.ndarray:
        if q is None:
            return mean
        levels = np.atleast_1d(np.asarray(q, dtype=float))
        out = []
        for level in levels:
            hit = np.flatnonzero(np.isclose(self.percentiles, level))
            if hit.size:
                out.append(table[hit[0]])
            elif samples is not None:
                out.append(np.percentile(samples, level, axis=0))
            else:
                raise ValueError(
                    f"percentile {level:g} is not stored (stored: {self.percentiles.tolist()}) and the map keeps "
                    "no samples; predict with percentiles=... or keep_samples > 0"
                )
        result = np.stack(out)
        return result[0] if np.ndim(q) == 0 else result

    def density(self, q: float | Sequence[float] | None = None) -> u.Quantity:
        """Extinction density, mag/pc: the posterior mean (``q=None``) or percentiles ``q`` (0-100).

        Returns shape ``(n_d, n_b, n_l)`` for a scalar/None ``q``, ``(len(q), n_d, n_b, n_l)`` for a sequence.
        """
        return self._pick(q, self.density_mean, self.density_percentiles, self.density_samples) * (u.mag / u.pc)

    def extinction(self, q: float | Sequence[float] | None = None) -> u.Quantity:
        """Extinction from the Sun to each cell's far edge, mag: mean or percentiles ``q`` of integrated samples."""
        samples = None if self.density_samples is None else self.extinction_samples()
        return self._pick(q, self.extinction_mean, self.extinction_percentiles, samples) * u.mag

    def total_extinction(self, q: float | Sequence[float] | None = None) -> u.Quantity:
        """Extinction to the far edge of the map, mag, shape ``(n_b, n_l)`` (or ``(len(q), n_b, n_l)``)."""
        return self.extinction(q)[..., -1, :, :]

    @property
    def region_slice(self) -> slice:
        """Slice of the distance axis that holds the mapped region's cells (the foreground ghost cells left out):
        ``dmap.density_mean[dmap.region_slice]``."""
        return slice(self.grid.ghost_cells, None)

    def __repr__(self) -> str:
        return f"PosteriorMap({self.grid!r}, percentiles={self.percentiles.tolist()}, n_samples={self.n_samples})"

    # ----- queries with the dustmaps conventions (dustgp.query) and files (dustgp.io) --------------------
    def _query_engine(self) -> Any:
        """A :class:`dustgp.query.DustMapQuery`, kept while the map's arrays stay the same objects."""
        arrays = (
            self.grid,
            self.percentiles,
            *(getattr(self, summary.name) for summary in SUMMARIES),
            self.density_samples,
        )
        cached = self.__dict__.get("_query_cache")
        if cached is None or any(a is not b for a, b in zip(cached[0], arrays, strict=True)):
            cached = (arrays, _product("query")(self))
            self.__dict__["_query_cache"] = cached
        return cached[1]

    def query(
        self,
        coords: Any,
        mode: str = "mean",
        pct: float | Sequence[float] | None = None,
        return_flags: bool = False,
    ) -> Any:
        """Extinction (mag) at sky positions with distances, with the ``dustmaps`` conventions.

        See :meth:`dustgp.query.DustMapQuery.query`: ``mode`` in ``mean``, ``median``, ``std``,
        ``samples``, ``random_sample``, ``percentile`` (with ``pct``); output shaped like ``coords``
        (samples or percentiles on the last axis); NaN outside the map; continuous in distance.
        """
        return self._query_engine().query(coords, mode=mode, pct=pct, return_flags=return_flags)

    def __call__(self, coords: Any, **kwargs: Any) -> Any:
        """Alias for :meth:`query`."""
        return self.query(coords, **kwargs)

    def query_gal(self, l: Any, b: Any, d: Any = None, **kwargs: Any) -> Any:
        """Query at Galactic (l, b, d): bare numbers are deg, deg and **kpc**, as in ``dustmaps``."""
        return self._query_engine().query_gal(l, b, d, **kwargs)

    @property
    def distances(self) -> u.Quantity:
        """Distance-cell centres, ghost cells included, shape ``(n_d,)``, pc."""
        return self.grid.d_centers * u.pc

    @property
    def distance_bounds(self) -> u.Quantity:
        """Distance-cell edges from 0 to ``d_max``, shape ``(n_d + 1,)``, pc."""
        return self.grid.d_edges * u.pc

    def save(self, path: Any, **kwargs: Any) -> Any:
        """Write the map, format from the name (``.nc``, ``.fits``); see :func:`dustgp.io.write_map`."""
        return _product("write")(self, path, **kwargs)

    @classmethod
    def load(cls, path: Any) -> PosteriorMap:
        """Read a map written by :meth:`save` (NetCDF or FITS cube); see :func:`dustgp.io.read_map`."""
        dmap = _product("read")(path)
        if not isinstance(dmap, cls):
            raise TypeError(f"{path}: holds a {type(dmap).__name__}, not a PosteriorMap; use dustgp.io.read_map")
        return dmap
