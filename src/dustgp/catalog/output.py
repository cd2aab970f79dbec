"""The catalogue written out: as an astropy table with units (:meth:`Catalog.to_table`), and as a short text
summary (:meth:`Catalog.summary`).

The functions here take the catalogue as their first argument; :class:`~dustgp.catalog.Catalog` binds them as its
methods (as it binds the readers of :mod:`dustgp.catalog.readers` as classmethods), and they read only its public
attributes.
"""

from __future__ import annotations

from typing import Any

import astropy.units as u
import numpy as np
from astropy.table import Table

__all__ = ["summary", "to_table"]


def to_table(catalog: Any) -> Table:
    """The catalogue as an :class:`~astropy.table.Table` with units.

    Returns
    -------
    astropy.table.Table
        Columns ``l``, ``b`` (deg), ``distance`` (pc), ``distance_err`` (pc, if any), ``parallax``,
        ``parallax_err`` (mas, if any), ``A0``, ``A0_err`` (observed), ``A0_inflation``, ``A0_err_total``
        (mag) and ``row_index``; ``meta["parallax_length_scale"]`` (pc) with the parallaxes. The names match
        the defaults of :meth:`~dustgp.catalog.Catalog.from_table`, so
        ``Catalog.from_table(cat.to_table(), distance_err="distance_err")`` rebuilds the catalogue (re-estimating
        the inflation), and
        ``Catalog.from_table(t, parallax="parallax", parallax_err="parallax_err",
        parallax_length_scale=t.meta["parallax_length_scale"])`` one with parallaxes.
    """
    table = Table()
    table["l"] = catalog.l.copy() * u.deg
    table["b"] = catalog.b.copy() * u.deg
    table["distance"] = catalog.distance.copy() * u.pc
    if catalog.distance_err is not None:
        table["distance_err"] = catalog.distance_err.copy() * u.pc
    if catalog.parallax is not None:
        table["parallax"] = catalog.parallax.copy() * u.mas
        table["parallax_err"] = catalog.parallax_err.copy() * u.mas
        table.meta["parallax_length_scale"] = catalog.parallax_length_scale
    table["A0"] = catalog.extinction.copy() * u.mag
    table["A0_err"] = catalog.extinction_err_observed.copy() * u.mag
    table["A0_inflation"] = catalog.inflation.copy() * u.mag
    table["A0_err_total"] = catalog.extinction_err.copy() * u.mag
    table["row_index"] = catalog.row_index.copy()
    table.meta["n_dropped_rows"] = int(catalog.dropped_rows.size)
    return table


def summary(catalog: Any) -> str:
    """A short multi-line description: number of stars, ranges, median uncertainties, inflation.

    Returns
    -------
    str
    """
    n = len(catalog)
    lines = [f"Catalog: {n} stars ({catalog.dropped_rows.size} input rows dropped)"]
    if n == 0:
        return lines[0]
    lines.append(
        f"  l {catalog.l.min():.2f} .. {catalog.l.max():.2f} deg, b {catalog.b.min():.2f} .. {catalog.b.max():.2f} deg"
    )
    d_line = f"  distance {catalog.distance.min():.4g} .. {catalog.distance.max():.4g} pc"
    d_line += f" (median {np.median(catalog.distance):.4g} pc"
    if catalog.distance_err is not None:
        d_line += f", median sigma_d {np.median(catalog.distance_err):.3g} pc"
    lines.append(d_line + ")")
    if catalog.parallax is not None:
        lines.append(
            f"  from parallaxes {catalog.parallax.min():.3g} .. {catalog.parallax.max():.3g} mas (median sigma "
            f"{np.median(catalog.parallax_err):.3g} mas), prior d² exp(-d/L), L = {catalog.parallax_length_scale:g} pc"
        )
    lines.append(
        f"  extinction {catalog.extinction.min():.3g} .. {catalog.extinction.max():.3g} mag "
        f"(median {np.median(catalog.extinction):.3g} mag)"
    )
    lines.append(
        f"  sigma_A median {np.median(catalog.extinction_err_observed):.3g} mag observed, "
        f"{np.median(catalog.extinction_err):.3g} mag used"
    )
    if np.any(catalog.inflation > 0):
        lines.append(
            f"  inflation (quadrature term) median {np.median(catalog.inflation):.3g} mag, "
            f"90th percentile {np.percentile(catalog.inflation, 90):.3g} mag, "
            f"max {catalog.inflation.max():.3g} mag"
        )
    else:
        lines.append("  inflation: none")
    return "\n".join(lines)
