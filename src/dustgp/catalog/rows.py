"""The row checks of the friendly constructors: every row of the input checked, bad ones raised or dropped.

:func:`assemble` takes the columns in internal units (:mod:`dustgp.catalog.units`), turns parallaxes and
percentile pairs into distances and 1-sigma uncertainties (a parallax with an error into the median and half the
16-84% width of its posterior, whose nodes for the fit come from the same table,
:func:`~dustgp.catalog.parallax_percentiles_and_nodes`), applies the
extinction-uncertainty floor, checks every row (:mod:`dustgp.catalog.checks`), and either raises one
:class:`~dustgp.catalog.CatalogError` listing the bad rows (``on_bad="raise"``) or drops them with a warning that
counts them per reason (``on_bad="drop"``). It returns the arrays of the core :class:`~dustgp.catalog.Catalog`
constructor. Rows that repeat another row's l, b,
distance and extinction are kept, with a warning: each counts as a star of its own.
"""

from __future__ import annotations

import logging
import math
import numbers
from typing import Any, Literal, get_args

import numpy as np

from .checks import (
    MAX_ABS_PARALLAX,
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
from .distances import DISTANCE_NODES, PARALLAX_LENGTH_SCALE, parallax_percentiles_and_nodes
from .units import Col, pair_label, warn_if_kpc

__all__ = ["DistanceKind", "OnBad", "assemble", "check_options"]

logger = logging.getLogger(__name__)

#: What to do with bad rows: raise a CatalogError listing them, or drop them with a warning.
OnBad = Literal["raise", "drop"]
#: What a catalogue's distances are: each star's posterior (median and width) or a measurement of it.
DistanceKind = Literal["posterior", "measurement"]


def check_options(
    on_bad: str,
    extinction_err_floor: float,
    parallax_length_scale: float = PARALLAX_LENGTH_SCALE,
    distance_kind: str = "posterior",
) -> None:
    """Check ``on_bad``, ``extinction_err_floor`` (mag), ``parallax_length_scale`` (pc) and ``distance_kind``
    before any column is read."""
    if on_bad not in ("raise", "drop"):
        raise CatalogError(f"on_bad: expected 'raise' or 'drop', got {on_bad!r}")
    if distance_kind not in get_args(DistanceKind):
        raise CatalogError(f"distance_kind: expected 'posterior' or 'measurement', got {distance_kind!r}")
    if not (_is_real(extinction_err_floor) and math.isfinite(extinction_err_floor) and extinction_err_floor >= 0):
        raise CatalogError(f"extinction_err_floor: expected a finite value >= 0 mag, got {extinction_err_floor!r}")
    if not (_is_real(parallax_length_scale) and math.isfinite(parallax_length_scale) and parallax_length_scale > 0):
        raise CatalogError(f"parallax_length_scale: expected a finite value > 0 pc, got {parallax_length_scale!r}")


def _is_real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


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
    parallax_length_scale: float = PARALLAX_LENGTH_SCALE,
) -> dict[str, Any]:
    """Check the rows, raise or drop the bad ones, and return the arguments of the core constructor.

    A parallax with an error gives the median (``distance``) and half the 16-84% width (``distance_err``) of the
    posterior under the prior ``d² exp(-d / L)``, L = ``parallax_length_scale`` (pc), for any sign of the parallax,
    and from the same table its :data:`~dustgp.catalog.DISTANCE_NODES` nodes, which a fit averages over; a parallax
    alone gives ``distance = 1000 / parallax`` (parallax > 0) and no uncertainty.

    Returns
    -------
    dict
        ``l``, ``b`` (deg), ``distance`` (pc), ``extinction``, ``extinction_err`` (mag), ``distance_err`` (pc, or
        None), ``parallax``, ``parallax_err`` (mas, or None: given only with an error), ``parallax_length_scale``
        (pc), ``distance_node_cache`` (the nodes, pc, by k; empty without parallax errors), ``row_index`` and
        ``dropped_rows``: ``Catalog(**fields)`` builds the catalogue.

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

        sigma_d: np.ndarray | None = None
        nodes: np.ndarray | None = None
        if parallax is not None and parallax_err is not None:
            d, sigma_d, nodes = _parallax_posterior(problems, parallax, parallax_err, parallax_length_scale)
        elif parallax is not None:
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

        if distance_err is not None:
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
        "parallax": None if parallax_err is None or parallax is None else parallax.values[keep],
        "parallax_err": None if parallax_err is None else parallax_err.values[keep],
        "parallax_length_scale": parallax_length_scale,
        "distance_node_cache": {} if nodes is None else {DISTANCE_NODES: nodes[keep]},
        "row_index": np.flatnonzero(keep),
        "dropped_rows": np.flatnonzero(bad),
    }


def _parallax_posterior(
    problems: list[Problem], parallax: Col, parallax_err: Col, length_scale: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Median and half the 16-84% width (pc) of each row's parallax posterior, and its
    :data:`~dustgp.catalog.DISTANCE_NODES` nodes (pc, (n, k)), from one table; NaN in rows recorded as bad."""
    plx, err = parallax.values, parallax_err.values
    check(problems, parallax_err.label, "parallax uncertainty > 0 mas", "uncertainty <= 0", err <= 0)
    large = np.isfinite(plx) & (np.abs(plx) > MAX_ABS_PARALLAX)
    check(
        problems,
        parallax.label,
        f"|parallax| <= {MAX_ABS_PARALLAX:g} mas (larger is implausible: a unit or sentinel value?)",
        f"|parallax| > {MAX_ABS_PARALLAX:g} mas",
        large,
    )
    usable = np.isfinite(plx) & np.isfinite(err) & (err > 0) & ~large
    p16, p50, p84 = np.full((3, plx.size), np.nan)
    nodes = np.full((plx.size, DISTANCE_NODES), np.nan)
    if usable.any():
        percentiles, nodes[usable] = parallax_percentiles_and_nodes(
            plx[usable], err[usable], (16.0, 50.0, 84.0), DISTANCE_NODES, length_scale=length_scale
        )
        p16[usable], p50[usable], p84[usable] = percentiles.T
    check_distance_plausible(problems, parallax.label, p50)
    return p50, 0.5 * (p84 - p16), nodes
