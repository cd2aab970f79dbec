"""Whole tables and planes: a map queried at every row of a table, or at every pixel of the sky at one distance."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import astropy.units as u
import numpy as np
from astropy.table import Column, Table

from .._units import distance_pc
from ..posterior_map import PosteriorMap
from .dustmap_query import DustMapQuery, QueryError

__all__ = ["TABLE_COLUMNS", "extinction_plane", "query_table"]


def extinction_plane(
    dmap: PosteriorMap, distance: float | u.Quantity | None = None, *, mode: str = "mean", pct: Any = None
) -> np.ndarray:
    """Extinction from the Sun to one distance at every (b, l) pixel centre of the map.

    Parameters
    ----------
    dmap : PosteriorMap
    distance : float or astropy.units.Quantity, optional
        Distance, pc when a bare number; default ``d_max`` (the total extinction through the map).
    mode, pct
        As in :meth:`DustMapQuery.query`.

    Returns
    -------
    numpy.ndarray, shape (n_b, n_l) (+ (n_samples,) or (len(pct),))
        Extinction, mag, continuous in distance (linear within a cell, see :mod:`dustgp.query.dustmap_query`).
    """
    grid = dmap.grid
    d = grid.d_max if distance is None else float(distance_pc(distance, "extinction_plane: distance"))
    if not 0 <= d <= grid.d_max:
        raise QueryError(f"distance: expected 0..{grid.d_max:g} pc (the map's extent), got {d:g} pc")
    b, l = np.meshgrid(grid.b_centers, grid.l_centers, indexing="ij")
    return DustMapQuery(dmap).query_lbd(l, b, d * u.pc, mode=mode, pct=pct)


#: Column names tried, in order, for each coordinate of a table by :func:`query_table`.
TABLE_COLUMNS = {"l": ("l", "glon", "GLON"), "b": ("b", "glat", "GLAT"), "d": ("d", "distance", "dist")}


def _table_column(table: Table, axis: str, name: str | None, unit: u.Unit) -> np.ndarray:
    """A coordinate column as a float array in ``unit``; bare numbers are taken to be in ``unit``."""
    names = (name,) if name else TABLE_COLUMNS[axis]
    found = next((n for n in names if n in table.colnames), None)
    if found is None:
        raise QueryError(
            f"table: expected a column {' or '.join(map(repr, names))} for {axis} ({unit}), got columns "
            f"{', '.join(map(repr, table.colnames))}"
        )
    column = table[found]
    if getattr(column, "unit", None) is not None and column.unit != unit:
        try:
            return u.Quantity(column).to_value(unit)
        except u.UnitConversionError:
            raise QueryError(f"column {found!r}: expected a unit convertible to {unit}, got {column.unit}") from None
    return np.asarray(column, dtype=float)


def query_table(
    dmap: PosteriorMap,
    table: Table,
    *,
    columns: Sequence[str | None] = (None, None, None),
    mode: str = "mean",
    pct: float | Sequence[float] | None = None,
    integrated: bool = True,
    seed: int | np.random.Generator | None = None,
) -> Table:
    """Query a map at the positions of a table and return the table with the answers as new columns.

    Parameters
    ----------
    dmap : PosteriorMap
    table : astropy.table.Table
        Galactic longitude, latitude and distance columns; bare numbers are deg, deg and **pc** (a column with
        a unit is converted).
    columns : sequence of three str or None
        Names of the (l, b, d) columns; ``None`` tries those of :data:`TABLE_COLUMNS` (``l``/``glon``,
        ``b``/``glat``, ``d``/``distance``/``dist``).
    mode, pct
        As in :meth:`DustMapQuery.query`.
    integrated : bool
        Extinction from the Sun (``A_*`` columns, mag) or the density of the cell (``rho_*``, mag/pc).
    seed : int, numpy.random.Generator or None
        Seeds ``random_sample`` modes.

    Returns
    -------
    astropy.table.Table
        A copy of ``table`` with, for extinction, ``A_mean``, ``A_median``, ``A_std``, ``A_p<level>`` (one per
        level), ``A_random_sample`` (or ``_per_pix``) or ``A_samples`` (a 2D column, one sample per entry), and
        the flags ``in_map`` and ``reliable_dist`` (see :meth:`DustMapQuery.query`). NaN outside the map.

    Raises
    ------
    QueryError
        A missing coordinate column, a column in the wrong unit, an answer column the table already has, or
        a query the map cannot answer.
    """
    if len(columns) != 3:
        raise QueryError(f"columns: expected three names (l, b, d) or None, got {list(columns)}")
    l = _table_column(table, "l", columns[0], u.deg)
    b = _table_column(table, "b", columns[1], u.deg)
    d = _table_column(table, "d", columns[2], u.pc)
    query = DustMapQuery(dmap, integrated=integrated, seed=seed)
    values, flags = query.query_lbd(l, b, d * u.pc, mode=mode, pct=pct, return_flags=True)
    prefix, unit = ("A", u.mag) if integrated else ("rho", u.mag / u.pc)
    if mode == "percentile":
        levels = np.atleast_1d(np.asarray(pct, dtype=float))
        names = [f"{prefix}_p{level:g}" for level in levels]
        parts = [values] if np.ndim(pct) == 0 else [values[:, i] for i in range(levels.size)]
    else:
        names, parts = [f"{prefix}_{mode}"], [values]
    names += ["in_map", "reliable_dist"]
    clash = [name for name in names if name in table.colnames]
    if clash:
        raise QueryError(f"table: already has column{'s' if len(clash) > 1 else ''} {', '.join(map(repr, clash))}")
    out = table.copy(copy_data=False)
    for name, part in zip(names, parts, strict=False):
        out[name] = Column(part, unit=unit, copy=False)
    out["in_map"] = flags["in_bounds"]
    out["reliable_dist"] = flags["reliable_dist"]
    # provenance under FITS-legal keys (8 characters), so that every table format keeps it
    out.meta["DGP_MODE"] = mode
    if pct is not None:
        out.meta["DGP_PCT"] = ",".join(f"{level:g}" for level in np.atleast_1d(np.asarray(pct, dtype=float)))
    out.meta["DGP_MAP"] = repr(dmap)
    return out
