"""The query engine: :class:`DustMapQuery`, vectorised ``dustmaps``-style point queries of a map.

Extinction is continuous in distance. Each cell of the map is uniform (docs: Method §2), so along a sightline the
extinction grows linearly inside a cell (the partial-cell term of the paper's Eq. 8):

.. math:: A(d) = A(d_{j-1/2}) + \\rho_j \\, (d - d_{j-1/2}), \\qquad d_{j-1/2} \\le d \\le d_{j+1/2},

which is linear interpolation between the extinction stored at the cell edges (extinction is zero at the first
edge: the Sun when the map has ghost cells, ``d_min`` otherwise). For joint posterior samples this is exact,
sample by sample. It is also exact for the posterior mean (the mean is linear). The stored standard deviations
and percentiles are interpolated the same way between the edges where they were computed: an approximation
inside a cell (the percentile of a sum is not the sum of percentiles), exact at the edges.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import astropy.units as u
import numpy as np
from astropy.coordinates import SkyCoord, UnitSphericalRepresentation

from .._units import degrees, distance_pc
from ..posterior_map import PosteriorMap, register_product

__all__ = ["FLAGS_DTYPE", "MODES", "DustMapQuery", "QueryError"]


#: Query modes, as in ``dustmaps.bayestar.BayestarQuery.query``.
MODES = ("mean", "median", "std", "samples", "random_sample", "random_sample_per_pix", "percentile")

#: Flags returned with ``return_flags=True``.
FLAGS_DTYPE = np.dtype([("in_bounds", bool), ("reliable_dist", bool)])


class QueryError(ValueError):
    """A query the map cannot answer (a mode, a percentile or coordinates it does not have)."""


def _percentile_levels(mode: str, pct: float | Sequence[float] | None) -> tuple[np.ndarray, bool]:
    """Levels (0-100) for a percentile-type mode and whether the caller asked for a scalar."""
    if mode == "median":
        return np.array([50.0]), True
    if pct is None:
        raise QueryError('mode="percentile" needs pct= (a number or a list of numbers in 0..100)')
    levels = np.asarray(pct, dtype=float)
    if levels.ndim > 1:
        raise QueryError(f"pct: expected a number or a 1D list, got shape {levels.shape}")
    if np.any((levels < 0) | (levels > 100)) or not np.all(np.isfinite(levels)):
        raise QueryError(f"pct: expected values in 0..100, got {levels.tolist()}")
    return np.atleast_1d(levels), levels.ndim == 0


class DustMapQuery:
    """Vectorised dustmaps-style queries of a :class:`~dustgp.posterior_map.PosteriorMap`.

    Parameters
    ----------
    dmap : PosteriorMap
        The map to query.
    integrated : bool
        ``True`` (default): return extinction from the Sun to the queried distance, mag. ``False``: return the
        extinction density of the cell holding the position, mag/pc (as ``dustmaps.edenhofer2023`` does).
    seed : int, numpy.random.Generator or None
        Seeds the random choice of samples in ``mode="random_sample"`` and ``"random_sample_per_pix"``.

    Notes
    -----
    Values are plain floats in mag (or mag/pc), as ``dustmaps`` returns them. Positions outside the map in
    (l, b), beyond ``d_max``, with negative or non-finite distance give NaN. When the map has no ghost cells,
    distances in front of ``d_min`` give zero extinction (the map assumes no dust there) and NaN density.

    The lookup tables (extinction at cell edges) are built on first use of each mode and kept: build one
    ``DustMapQuery`` and call it many times rather than one per call. The tables assume the map's arrays are
    not changed in place afterwards.

    Examples
    --------
    >>> from astropy.coordinates import SkyCoord
    >>> import astropy.units as u
    >>> q = DustMapQuery(dmap)                                              # doctest: +SKIP
    >>> q(SkyCoord(l=60 * u.deg, b=2 * u.deg, distance=300 * u.pc, frame="galactic"))  # doctest: +SKIP
    """

    def __init__(
        self, dmap: PosteriorMap, *, integrated: bool = True, seed: int | np.random.Generator | None = None
    ) -> None:
        self.dmap = dmap
        self.integrated = bool(integrated)
        self._rng = np.random.default_rng(seed)
        self._tables: dict[Any, np.ndarray] = {}
        grid = dmap.grid
        self._n_cols = grid.n_columns
        self._d_edges = np.asarray(grid.d_edges, dtype=float)
        self._dd = np.diff(self._d_edges)

    # ----- dustmaps properties ------------------------------------------------------------------------------
    @property
    def distances(self) -> u.Quantity:
        """Distance-cell centres, ghost cells included, shape ``(n_d,)``, pc (as in ``edenhofer2023``)."""
        return self.dmap.grid.d_centers * u.pc

    @property
    def distance_bounds(self) -> u.Quantity:
        """Distance-cell edges from 0 (ghost cells included) to ``d_max``, shape ``(n_d + 1,)``, pc."""
        return self._d_edges * u.pc

    @property
    def n_samples(self) -> int:
        """Number of stored joint posterior samples (0 when the map keeps none)."""
        return self.dmap.n_samples

    # ----- lookup tables: (n_rows, k) with row = edge_or_cell * n_columns + column --------------------------
    def _table(self, key: Any) -> np.ndarray:
        """A lookup table, built on first use.

        Integrated tables hold values at the ``n_d + 1`` cell edges (a row of zeros for the first edge);
        density tables hold the ``n_d`` cell values. Rows are ``edge * n_columns + column``; columns of the
        table are samples or percentile levels (one column for mean and std).
        """
        if key in self._tables:
            return self._tables[key]
        dm, n_cols = self.dmap, self._n_cols
        _, what = key
        if self.integrated:
            if what == "samples":
                cube = np.moveaxis(dm.extinction_samples(), 0, -1)  # (n_d, n_b, n_l, n_s)
            elif what == "mean":
                cube = dm.extinction_mean[..., None]
            elif what == "std":
                cube = dm.extinction_std[..., None]
            else:
                cube = dm.extinction_percentiles[what][..., None]
            zero = np.zeros((1, *cube.shape[1:]), dtype=cube.dtype)
            table = np.concatenate([zero, cube]).reshape((dm.grid.n_d + 1) * n_cols, -1)
        else:
            if what == "samples":
                if dm.density_samples is None:
                    raise QueryError("this map keeps no posterior samples; predict with keep_samples > 0")
                cube = np.moveaxis(dm.density_samples, 0, -1)
            elif what == "mean":
                cube = dm.density_mean[..., None]
            elif what == "std":
                cube = dm.density_std[..., None]
            else:
                cube = dm.density_percentiles[what][..., None]
            table = np.ascontiguousarray(cube).reshape(dm.grid.n_d * n_cols, -1)
        self._tables[key] = table
        return table

    def _stored_level(self, level: float) -> int | None:
        hit = np.flatnonzero(np.isclose(self.dmap.percentiles, level, rtol=0.0, atol=1e-9))
        return int(hit[0]) if hit.size else None

    # ----- the core: flat arrays in deg, deg, pc ------------------------------------------------------------
    def _locate(self, l: np.ndarray, b: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Row of the near edge (or cell), interpolation weight in the cell, and validity of each position."""
        grid, edges = self.dmap.grid, self._d_edges
        # in front of the first edge (maps without ghost cells): extinction 0 there, and no density cell
        front = (d >= 0) & (d < edges[0])
        i_d, i_b, i_l = grid.locate(l, b, np.where(front, edges[0], d))
        valid = i_d >= 0
        if not self.integrated:
            valid &= ~front
        i_d = np.where(valid, i_d, 0)
        row = i_d * self._n_cols + np.where(valid, i_b * grid.n_l + i_l, 0)
        with np.errstate(invalid="ignore"):
            weight = (d - edges[i_d]) / self._dd[i_d]
        # positions off the map get a harmless weight (their values are replaced by NaN afterwards)
        weight = np.where(valid & ~front, weight, 0.0)
        return row, weight, valid

    def _gather(self, table: np.ndarray, row: np.ndarray, weight: np.ndarray, column: Any = slice(None)) -> Any:
        """Value at each position: linear between the edge rows (integrated) or the cell row (density)."""
        if not self.integrated:
            return table[row, column]
        near = table[row, column]
        far = table[row + self._n_cols, column]
        w = weight if np.ndim(near) == 1 else weight[:, None]
        # (1 - w) a + w b rather than a + w (b - a): exact at both edges (w = 0 and w = 1)
        return (1.0 - w) * near + w * far

    def query_lbd(
        self,
        l: Any,
        b: Any,
        d: Any,
        *,
        mode: str = "mean",
        pct: float | Sequence[float] | None = None,
        return_flags: bool = False,
    ) -> Any:
        """Query at Galactic (l, b, d): Quantities, or bare numbers in deg, deg and **pc**.

        Parameters
        ----------
        l, b : array_like or astropy.units.Quantity
            Galactic longitude and latitude, deg (any shapes that broadcast together with ``d``).
        d : array_like or astropy.units.Quantity
            Distance from the Sun, pc (a Quantity in any length unit is converted; bare numbers that all look like
            kpc get a warning, as a catalogue's column does).
        mode, pct, return_flags
            As in :meth:`query`.

        Returns
        -------
        numpy.ndarray or float
            Shape ``broadcast(l, b, d).shape`` (plus a last axis of samples or percentiles); a scalar for
            scalar input and a scalar-valued mode.
        """
        if mode not in MODES:
            raise QueryError(f"mode: expected one of {MODES}, got {mode!r}")
        l_a, b_a, d_a = np.broadcast_arrays(degrees(l), degrees(b), distance_pc(d, "query_lbd"))
        shape = l_a.shape
        row, weight, valid = self._locate(l_a.ravel(), b_a.ravel(), d_a.ravel())
        n = row.size

        if mode in ("mean", "std"):
            out = self._gather(self._table(("summary", mode)), row, weight, 0)
        elif mode in ("samples", "random_sample", "random_sample_per_pix"):
            if self.n_samples == 0:
                raise QueryError(f'mode="{mode}" needs posterior samples; this map keeps none')
            table = self._table(("summary", "samples"))
            if mode == "samples":
                out = self._gather(table, row, weight)
            else:
                if mode == "random_sample":
                    # a different sample at each position, as dustmaps' Bayestar does
                    pick = self._rng.integers(0, self.n_samples, n)
                else:
                    # one sample per (b, l) pixel, shared by all positions that fall in it
                    pick = self._rng.integers(0, self.n_samples, self._n_cols)[row % self._n_cols]
                out = self._gather_picked(table, row, weight, pick)
        else:  # median, percentile
            levels, scalar = _percentile_levels(mode, pct)
            columns = []
            for level in levels:
                k = self._stored_level(level)
                if k is not None:
                    columns.append(self._gather(self._table(("summary", k)), row, weight, 0))
                elif self.n_samples:
                    values = self._gather(self._table(("summary", "samples")), row, weight)
                    columns.append(np.percentile(values, level, axis=-1))
                else:
                    raise QueryError(
                        f"percentile {level:g} is not stored (stored: {self.dmap.percentiles.tolist()}) and "
                        "the map keeps no samples to compute it from"
                    )
            out = columns[0] if scalar else np.stack(columns, axis=-1)

        out = np.asarray(out, dtype=np.result_type(out, np.float64))
        out[~valid] = np.nan
        out = out.reshape(shape + out.shape[1:])
        if out.ndim == 0:
            out = out[()]
        if not return_flags:
            return out
        flags = np.zeros(n, dtype=FLAGS_DTYPE)
        flags["in_bounds"] = valid
        flags["reliable_dist"] = valid & (d_a.ravel() >= self.dmap.grid.d_min)
        if self.dmap.reliable_distance is not None:  # and no farther than the farthest star of the column
            _, i_b, i_l = self.dmap.grid.locate(l_a.ravel(), b_a.ravel(), np.full(n, self.dmap.grid.d_min))
            farthest = np.where(i_b >= 0, self.dmap.reliable_distance[1][i_b, i_l], np.nan)
            with np.errstate(invalid="ignore"):  # NaN: no star in the column
                flags["reliable_dist"] &= d_a.ravel() <= farthest
        flags = flags.reshape(shape)
        return out, (flags[()] if flags.ndim == 0 else flags)

    def _gather_picked(self, table: np.ndarray, row: np.ndarray, weight: np.ndarray, pick: np.ndarray) -> Any:
        if not self.integrated:
            return table[row, pick]
        return (1.0 - weight) * table[row, pick] + weight * table[row + self._n_cols, pick]

    # ----- the dustmaps-style surface -----------------------------------------------------------------------
    def query(
        self,
        coords: SkyCoord,
        mode: str = "mean",
        pct: float | Sequence[float] | None = None,
        return_flags: bool = False,
    ) -> Any:
        """Extinction (or density) at sky positions with distances.

        Parameters
        ----------
        coords : astropy.coordinates.SkyCoord
            Positions with distances, any frame and shape (transformed to Galactic).
        mode : {"mean", "median", "std", "samples", "random_sample", "random_sample_per_pix", "percentile"}
            ``mean``/``std``: stored posterior mean / standard deviation. ``median`` and ``percentile``:
            stored percentiles (computed from the stored samples when the level is not stored). ``samples``:
            every stored joint sample (last axis). ``random_sample``: one random sample per position;
            ``random_sample_per_pix``: the same random sample for all positions in one (l, b) pixel.
        pct : float or sequence of float, optional
            Percentile level(s), 0-100, for ``mode="percentile"``; a list gives a last axis of the same
            length.
        return_flags : bool
            Also return a structured array with fields ``in_bounds`` (inside the map) and ``reliable_dist``
            (inside the map, beyond ``d_min`` and, where the map records it, no farther than the farthest star
            of the column: where stars constrain it; ghost cells are not).

        Returns
        -------
        numpy.ndarray or float
            Extinction A from the Sun to each position, mag (or density, mag/pc, when ``integrated=False``),
            shape ``coords.shape`` (+ ``(n_samples,)`` or ``(len(pct),)``); a scalar for a scalar coordinate.

        Raises
        ------
        QueryError
            For coordinates without distances, an unknown mode, or a percentile that cannot be computed.
        """
        if not isinstance(coords, SkyCoord):
            raise TypeError(f"coords: expected an astropy.coordinates.SkyCoord, got {type(coords).__name__}")
        l, b, d = _galactic_lbd_pc(coords)
        return self.query_lbd(l, b, d * u.pc, mode=mode, pct=pct, return_flags=return_flags)

    def __call__(self, coords: SkyCoord, **kwargs: Any) -> Any:
        """Alias for :meth:`query`."""
        return self.query(coords, **kwargs)

    def query_gal(self, l: Any, b: Any, d: Any = None, **kwargs: Any) -> Any:
        """Query at Galactic coordinates given as numbers or Quantities, following ``dustmaps`` exactly.

        Parameters
        ----------
        l, b : float, array_like or astropy.units.Quantity
            Galactic longitude and latitude; bare numbers are deg.
        d : float, array_like or astropy.units.Quantity
            Distance from the Sun; bare numbers are **kpc**, as in ``dustmaps.map_base.DustMap.query_gal``
            (a Quantity in any length unit is converted).
        **kwargs
            ``mode``, ``pct``, ``return_flags`` as in :meth:`query`.
        """
        if d is None:
            raise QueryError("query_gal: this is a 3D map; give a distance d (kpc, or a Quantity)")
        return self.query_lbd(l, b, distance_pc(d, "query_gal", bare_unit=u.kpc) * u.pc, **kwargs)

    def __repr__(self) -> str:
        kind = "extinction" if self.integrated else "density"
        return f"DustMapQuery({kind}, {self.dmap!r})"


def _galactic_lbd_pc(coords: SkyCoord) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Galactic (l, b) in deg and distance in pc of a SkyCoord; error when it has no distance."""
    if isinstance(coords.data, UnitSphericalRepresentation) or coords.distance.unit == u.one:
        raise QueryError(
            "coords: expected positions with distances (SkyCoord(..., distance=...)); this is a 3D map and "
            "needs a distance for each position"
        )
    gal = coords if coords.frame.name == "galactic" else coords.transform_to("galactic")
    sph = gal.spherical
    return sph.lon.to_value(u.deg), sph.lat.to_value(u.deg), sph.distance.to_value(u.pc)


register_product("query", DustMapQuery)  # behind PosteriorMap.query, query_gal and __call__
