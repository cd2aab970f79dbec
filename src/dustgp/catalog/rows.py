"""The row checks of the friendly constructors: every row of the input checked, bad ones raised or dropped.

:func:`assemble` takes the columns in internal units (:mod:`dustgp.catalog.units`), turns parallaxes and
percentile pairs into distances and 1-sigma uncertainties, applies the extinction-uncertainty floor, checks every
row (:mod:`dustgp.catalog.checks`), and either raises one :class:`~dustgp.catalog.CatalogError` listing the bad
rows (``on_bad="raise"``) or drops them with a warning that counts them per reason (``on_bad="drop"``). It returns
the arrays of the core :class:`~dustgp.catalog.Catalog` constructor. Rows that repeat another row's l, b,
distance and extinction are kept, with a warning: each counts as a star of its own.
"""

from __future__ import annotations

import logging
import math
import numbers
from typing import Literal

import numpy as np

from .checks import (
    MAX_DISTANCE,
    CatalogError,
    Problem,
    check,
    check_distance_plausible,
    check_extinction_err_plausible,
    check_extinction_plausible,
    format_rows,
    raise_problems,
)
from .units import Col, pair_label, warn_if_kpc

__all__ = ["OnBad", "assemble", "check_options"]

logger = logging.getLogger(__name__)

#: What to do with bad rows: raise a CatalogError listing them, or drop them with a warning.
OnBad = Literal["raise", "drop"]


def check_options(on_bad: str, extinction_err_floor: float) -> None:
    """Check ``on_bad`` and ``extinction_err_floor`` (mag) before any column is read."""
    if on_bad not in ("raise", "drop"):
        raise CatalogError(f"on_bad: expected 'raise' or 'drop', got {on_bad!r}")
    number = isinstance(extinction_err_floor, numbers.Real) and not isinstance(extinction_err_floor, bool)
    if not (number and math.isfinite(extinction_err_floor) and extinction_err_floor >= 0):
        raise CatalogError(f"extinction_err_floor: expected a finite value >= 0 mag, got {extinction_err_floor!r}")


def _sigma_from(spec: Col | tuple[Col, Col], problems: list[Problem], what: str) -> tuple[str, np.ndarray]:
    """The 1-sigma values and their label, from a column or a (p16, p84) pair; records p84 < p16."""
    if isinstance(spec, tuple):
        lo, hi = spec
        label = pair_label(spec)
        check(problems, label, f"p84 >= p16 for the {what} percentiles", "p84 < p16", hi.values < lo.values)
        return label, 0.5 * (hi.values - lo.values)
    return spec.label, spec.values


def _warn_duplicates(rows: np.ndarray, l: np.ndarray, b: np.ndarray, d: np.ndarray, a: np.ndarray) -> None:
    """Warn when input rows repeat another row's l, b, distance and extinction: each would count as a star."""
    if rows.size < 2:
        return
    # Only rows sharing a distance with another can repeat one: sort on distance alone (fast), then compare the
    # full (l, b, d, A) rows of those candidates.
    order = rows[np.argsort(d[rows], kind="stable")]
    tie = d[order[1:]] == d[order[:-1]]
    if not tie.any():
        return
    candidates = np.unique(np.concatenate([order[1:][tie], order[:-1][tie]]))
    key = np.column_stack([l[candidates], b[candidates], d[candidates], a[candidates]])
    _, first = np.unique(key, axis=0, return_index=True)
    if first.size == candidates.size:
        return
    repeats = np.delete(candidates, first)
    logger.warning(
        "%d of %d rows repeat another row's l, b, distance and extinction (rows %s): each counts as one more "
        "star, so a repeated measurement weighs twice in the fit; remove the duplicates if they are one star",
        repeats.size,
        rows.size,
        format_rows(repeats),
    )


def assemble(
    *,
    n_rows: int,
    l: Col,
    b: Col,
    distance: Col | None,
    extinction: Col,
    extinction_err: Col | tuple[Col, Col],
    distance_err: Col | tuple[Col, Col] | None,
    parallax: Col | None,
    parallax_err: Col | None,
    on_bad: OnBad,
    extinction_err_floor: float,
) -> dict[str, np.ndarray | None]:
    """Check the rows, raise or drop the bad ones, and return the arguments of the core constructor.

    Returns
    -------
    dict
        ``l``, ``b`` (deg), ``distance`` (pc), ``extinction``, ``extinction_err`` (mag), ``distance_err`` (pc, or
        None), ``row_index`` and ``dropped_rows``: ``Catalog(**fields)`` builds the catalogue.

    Raises
    ------
    CatalogError
        Bad rows with ``on_bad="raise"``, or no valid row left.
    """
    used: list[Col] = [l, b, extinction]
    for spec in (distance, parallax, parallax_err, extinction_err, distance_err):
        if isinstance(spec, tuple):
            used += list(spec)
        elif spec is not None:
            used.append(spec)

    problems: list[Problem] = []
    with np.errstate(invalid="ignore", divide="ignore"):
        for c in used:
            check(problems, c.label, "finite values", "NaN, inf or masked", ~np.isfinite(c.values))
        check(problems, b.label, "|b| <= 90 deg", "|b| > 90", np.abs(b.values) > 90.0)

        if parallax is not None:
            plx = parallax.values
            check(
                problems,
                parallax.label,
                "parallax > 0 mas (distance = 1000/parallax)",
                "parallax <= 0",
                plx <= 0,
            )
            min_plx = 1e3 / MAX_DISTANCE
            check(
                problems,
                parallax.label,
                f"parallax >= {min_plx:g} mas (distance <= {MAX_DISTANCE / 1e3:g} kpc; smaller is implausible)",
                f"0 < parallax < {min_plx:g} mas",
                (plx > 0) & (plx < min_plx),
            )
            d = np.where(plx > 0, 1000.0 / plx, np.nan)
        else:
            assert distance is not None
            d = distance.values
            check(problems, distance.label, "distance > 0 pc", "distance <= 0", d <= 0)
            check_distance_plausible(problems, distance.label, d)
            warn_if_kpc(distance)
        check_extinction_plausible(problems, extinction.label, extinction.values)

        ext_label, sigma = _sigma_from(extinction_err, problems, "extinction")
        sigma = np.maximum(sigma, extinction_err_floor)
        nonpositive = sigma <= 0
        if isinstance(extinction_err, tuple):
            nonpositive &= ~(extinction_err[1].values < extinction_err[0].values)  # reported as p84 < p16
        check(
            problems,
            ext_label,
            f"extinction uncertainty > 0 mag (after extinction_err_floor = {extinction_err_floor:g} mag)",
            "uncertainty <= 0",
            nonpositive,
        )
        check_extinction_err_plausible(problems, ext_label, sigma, floor=extinction_err_floor)

        sigma_d: np.ndarray | None = None
        if parallax_err is not None:
            assert parallax is not None
            check(
                problems,
                parallax_err.label,
                "parallax uncertainty >= 0 mas",
                "uncertainty < 0",
                parallax_err.values < 0,
            )
            sigma_d = 1000.0 * parallax_err.values / parallax.values**2
        elif distance_err is not None:
            d_label, sigma_d = _sigma_from(distance_err, problems, "distance")
            if not isinstance(distance_err, tuple):
                check(problems, d_label, "distance uncertainty >= 0 pc", "uncertainty < 0", sigma_d < 0)

    bad = np.zeros(n_rows, dtype=bool)
    for p in problems:
        bad[p.rows] = True
    if problems and on_bad == "raise":
        raise_problems(problems, n_rows, hint=" (pass on_bad='drop' to drop them)")
    if problems:
        logger.warning(
            "dropped %d of %d input rows: %s",
            int(bad.sum()),
            n_rows,
            "; ".join(f"{p.rows.size} with {p.found} in column {p.column}" for p in problems),
        )
    keep = ~bad
    if not keep.any():
        raise CatalogError(f"no valid stars: all {n_rows} input rows are bad or the input is empty")
    _warn_duplicates(np.flatnonzero(keep), l.values, b.values, d, extinction.values)
    return {
        "l": l.values[keep],
        "b": b.values[keep],
        "distance": d[keep],
        "extinction": extinction.values[keep],
        "extinction_err": sigma[keep],
        "distance_err": None if sigma_d is None else sigma_d[keep],
        "row_index": np.flatnonzero(keep),
        "dropped_rows": np.flatnonzero(bad),
    }
