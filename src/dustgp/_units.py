"""The units rule for bare numbers, everywhere in the public API.

An astropy Quantity is converted, whatever its unit. A bare number gets the documented unit: deg for angles, pc for
distances (``query_gal`` alone takes kpc, as ``dustmaps`` does). Bare distances that all look like the other unit
get a warning: all below :data:`KPC_WARNING_BELOW` read as pc look like kpc; all at or above it read as kpc look
like pc (30 kpc is beyond the Galaxy's dust). Catalogue columns follow the same rule
(:mod:`dustgp.catalog.units`), with messages that name the column.
"""

from __future__ import annotations

import logging
from typing import Any

import astropy.units as u
import numpy as np

__all__ = ["KPC_WARNING_BELOW", "degrees", "distance_pc"]

logger = logging.getLogger("dustgp")

#: Bare distances (pc) that all lie below this look like kpc; bare distances (kpc) all at or above it look like pc.
KPC_WARNING_BELOW = 30.0


def degrees(angle: Any) -> np.ndarray:
    """Angles in deg from a Quantity (any angle unit) or bare numbers (deg)."""
    return np.asarray(angle.to_value(u.deg) if isinstance(angle, u.Quantity) else angle, dtype=float)


def distance_pc(d: Any, where: str, *, bare_unit: u.UnitBase = u.pc) -> np.ndarray:
    """Distances in pc from a Quantity (any length unit) or bare numbers in ``bare_unit``.

    Parameters
    ----------
    d : float, array_like or astropy.units.Quantity
    where : str
        The function or argument, for the warning (``"query_lbd"``, ``"density_slice: distance"``).
    bare_unit : astropy.units.Unit
        The documented unit of bare numbers: pc, or kpc for ``dustmaps``' ``query_gal``.

    Returns
    -------
    numpy.ndarray
        Distances, pc (0-d for a scalar).
    """
    if isinstance(d, u.Quantity):
        return np.asarray(d.to_value(u.pc), dtype=float)
    values = np.asarray(d, dtype=float)
    with np.errstate(invalid="ignore"):
        finite = values[np.isfinite(values) & (values > 0)]
    other = None
    if finite.size and bare_unit == u.pc and finite.max() < KPC_WARNING_BELOW:
        other = "kpc"
    elif finite.size and bare_unit == u.kpc and finite.min() >= KPC_WARNING_BELOW:
        other = "pc"
    if other is not None:
        logger.warning(
            "%s: bare distances are %s, but these (%.3g..%.3g) look like %s; pass a Quantity (d * u.%s) to say so",
            where,
            bare_unit,
            finite.min(),
            finite.max(),
            other,
            other,
        )
    return values if bare_unit == u.pc else values * bare_unit.to(u.pc)
