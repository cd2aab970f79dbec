"""The units rule at the catalogue edge: every input value in deg, pc, mag or mas.

One rule for every friendly constructor: a column (or argument) with a unit is converted to the internal unit of
its quantity (:data:`UNITS`); one without a unit is in that documented unit (deg, pc, mag, mas), unless
``distance_unit`` states another for the distance columns. A unit on a column that contradicts a stated unit is an
error: one of the two is wrong. A unitless distance column whose values all lie below :data:`KPC_WARNING_BELOW` pc
looks like kpc and gets a warning (:func:`warn_if_kpc`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import astropy.units as u
import numpy as np

from .._units import KPC_WARNING_BELOW
from .checks import CatalogError, quoted

__all__ = [
    "KPC_WARNING_BELOW",
    "LENGTHS",
    "UNITS",
    "Col",
    "as_float",
    "column",
    "has_unit",
    "pair_label",
    "stated_unit",
    "warn_if_kpc",
]

logger = logging.getLogger(__name__)


#: Each quantity of a catalogue: its internal unit, and what it is (in messages).
UNITS: dict[str, tuple[u.UnitBase, str]] = {
    "l": (u.deg, "angle"),
    "b": (u.deg, "angle"),
    "distance": (u.pc, "length"),
    "extinction": (u.mag, "extinction"),
    "extinction_err": (u.mag, "extinction"),
    "distance_err": (u.pc, "length"),
    "parallax": (u.mas, "parallax angle"),
    "parallax_err": (u.mas, "parallax angle"),
}
#: The quantities read in ``distance_unit`` when they carry no unit.
LENGTHS = frozenset({"distance", "distance_err"})


@dataclass(frozen=True, eq=False)
class Col:
    """A column's values in internal units, with the label used in messages (e.g. ``'dist50'``).

    A dataclass, not a NamedTuple, so that ``isinstance(spec, tuple)`` tells a (p16, p84) pair from one
    column.
    """

    label: str
    values: np.ndarray
    bare: bool = False  # no unit on the column and none stated: read in the documented default unit


def has_unit(data: Any) -> bool:
    """Whether ``data`` carries a unit other than dimensionless."""
    unit = getattr(data, "unit", None)
    return unit is not None and unit != u.dimensionless_unscaled


def stated_unit(unit: str | u.UnitBase | None, name: str, expected_unit: u.UnitBase, what: str) -> u.UnitBase | None:
    """The unit stated by an option such as ``distance_unit``, checked to convert to ``expected_unit``."""
    if unit is None:
        return None
    try:
        parsed = u.Unit(unit)
        parsed.to(expected_unit)
    except (u.UnitsError, ValueError, TypeError) as exc:
        raise CatalogError(f"{name}: expected a unit of {what} such as {expected_unit}, got {unit!r}") from exc
    return parsed


def as_float(
    data: Any, label: str, expected_unit: u.UnitBase, what: str, stated: u.UnitBase | None = None
) -> np.ndarray:
    """Float64 values of ``data`` in ``expected_unit``; masked entries become NaN.

    ``data`` may be a table column (with or without unit, masked or not), a Quantity or array_like. A missing
    or dimensionless unit means the values are in ``stated`` if given, else already in ``expected_unit``. A
    unit on the data that differs from ``stated`` is an error: one of the two is wrong.
    """
    unit = getattr(data, "unit", None)
    if not has_unit(data):
        unit = stated
    elif stated is not None and u.Unit(unit) != stated:
        raise CatalogError(f"column {label}: its unit {str(unit)!r} contradicts the stated unit {str(stated)!r}")
    mask = np.ma.getmaskarray(data) if isinstance(data, np.ma.MaskedArray) else getattr(data, "mask", None)
    raw = getattr(data, "unmasked", data)  # astropy Masked quantities
    raw = raw.value if isinstance(raw, u.Quantity) else raw
    values = np.asarray(raw)
    if values.dtype.kind not in "iuf":
        raise CatalogError(f"column {label}: expected numeric {what} values, got dtype {values.dtype}")
    values = values.astype(np.float64, copy=True)
    if mask is not None:
        values[np.broadcast_to(np.asarray(mask, dtype=bool), values.shape)] = np.nan
    if unit is None or unit == u.dimensionless_unscaled:
        return values
    try:
        factor = u.Unit(unit).to(expected_unit)
    except (u.UnitsError, ValueError, TypeError, AttributeError) as exc:
        raise CatalogError(
            f"column {label}: unit {str(unit)!r} found, expected a unit convertible to {expected_unit} ({what})"
        ) from exc
    return values * factor


def column(data: Any, name: str, quantity: str, length_unit: u.UnitBase | None, *, one_d: bool = False) -> Col:
    """The values of ``data`` (a table column or an argument called ``name``) as the ``quantity`` of :data:`UNITS`.

    ``length_unit`` is the stated ``distance_unit`` (or None), applied to the quantities in :data:`LENGTHS`.
    ``one_d`` refuses arrays that are not 1-D (arguments; a table's columns are its rows).
    """
    unit, what = UNITS[quantity]
    stated = length_unit if quantity in LENGTHS else None
    label = quoted(name)
    values = as_float(data, label, unit, what, stated)
    if one_d and values.ndim != 1:
        raise CatalogError(f"{name}: expected a 1-D array, got ndim={values.ndim}")
    return Col(label, values, stated is None and not has_unit(data))


def pair_label(pair: tuple[Col, Col]) -> str:
    """``'p16'/'p84'``: how messages name a percentile pair."""
    return f"{pair[0].label}/{pair[1].label}"


def warn_if_kpc(distance: Col) -> None:
    """Warn when a bare distance column (read as pc) has values that all look like kpc."""
    if not distance.bare:
        return
    with np.errstate(invalid="ignore"):
        d = distance.values[np.isfinite(distance.values) & (distance.values > 0)]
    if d.size and d.max() < KPC_WARNING_BELOW:
        logger.warning(
            "column %s has no unit and is read as pc, but all %d distances are below %g pc (largest %.3g): this "
            "looks like kpc; pass distance_unit='kpc' (in a run file: distance_unit = \"kpc\" in [catalog]), or "
            "distance_unit='pc' if they are pc",
            distance.label,
            d.size,
            KPC_WARNING_BELOW,
            d.max(),
        )
