"""The column mapping: which column of an input table holds each quantity of a catalogue.

:class:`ColumnMap` is the one statement of the mapping that :meth:`Catalog.read <dustgp.catalog.Catalog.read>`
and :meth:`Catalog.from_table <dustgp.catalog.Catalog.from_table>` take as keywords (``l``, ``b``, ``distance``,
``extinction``, ``extinction_err``, ``distance_err``, ``parallax``, ``parallax_err``), with their defaults, the
checks of how they combine, the list of columns a table must have, and the reading of those columns in internal
units (:mod:`dustgp.catalog.units`). An uncertainty is one column of 1-sigma values or a ``(p16, p84)`` pair of
percentile columns.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import astropy.units as u
from astropy.table import Table

from .checks import CatalogError, quoted
from .units import UNITS, Col, column

__all__ = ["ColumnMap", "ColumnSpec", "check_distance_sources"]

#: A column name, or a ``(p16, p84)`` pair of percentile column names.
ErrorColumns = str | tuple[str, str]
#: What :meth:`ColumnMap.read` gives per quantity: a column, a percentile pair of columns, or None (not used).
ColumnSpec = Col | tuple[Col, Col] | None


@dataclass(frozen=True)
class ColumnMap:
    """Names of the input columns holding each quantity; the defaults match :meth:`Catalog.to_table`.

    Parameters
    ----------
    l, b : str
        Galactic longitude and latitude.
    distance : str
        Distance; not used when ``parallax`` is given.
    extinction : str
        Extinction.
    extinction_err : str or (str, str)
        1-sigma extinction uncertainty, or a ``(p16, p84)`` pair of percentile columns.
    distance_err : str or (str, str), optional
        1-sigma distance uncertainty, or a ``(p16, p84)`` pair; default none.
    parallax, parallax_err : str, optional
        Parallax and its uncertainty, used instead of ``distance`` and ``distance_err`` (the distance posterior of
        the parallax, see :meth:`Catalog.from_table <dustgp.catalog.Catalog.from_table>`).

    Raises
    ------
    CatalogError
        ``parallax_err`` without ``parallax``, or ``parallax`` together with ``distance_err``.
    """

    l: str = "l"
    b: str = "b"
    distance: str = "distance"
    extinction: str = "A0"
    extinction_err: ErrorColumns = "A0_err"
    distance_err: ErrorColumns | None = None
    parallax: str | None = None
    parallax_err: str | None = None

    def __post_init__(self) -> None:
        check_distance_sources(
            distance_err=self.distance_err is not None,
            parallax=self.parallax is not None,
            parallax_err=self.parallax_err is not None,
        )

    def names(self) -> list[str]:
        """The columns a table must have, in the order messages list them."""
        wanted: list[str] = [self.l, self.b, self.extinction]
        wanted += [self.parallax] if self.parallax is not None else [self.distance]
        wanted += list(self.extinction_err) if isinstance(self.extinction_err, tuple) else [self.extinction_err]
        if isinstance(self.distance_err, tuple):
            wanted += list(self.distance_err)
        elif self.distance_err is not None:
            wanted.append(self.distance_err)
        wanted += [self.parallax_err] if self.parallax_err is not None else []
        return wanted

    def check_present(self, table: Table) -> None:
        """Raise a :class:`CatalogError` naming the missing columns and the available ones, if any is missing."""
        missing = [name for name in self.names() if name not in table.colnames]
        if missing:
            raise CatalogError(
                f"missing column{'s' if len(missing) > 1 else ''} {', '.join(map(quoted, missing))}; "
                f"available columns: {', '.join(map(quoted, table.colnames))}"
            )

    def read(self, table: Table, length_unit: u.UnitBase | None) -> dict[str, ColumnSpec]:
        """The mapped columns of ``table`` in internal units, by quantity (None where not used).

        ``length_unit`` is the stated ``distance_unit`` (or None). With ``parallax`` given, ``distance`` is None.
        """
        out: dict[str, ColumnSpec] = {}
        for field in fields(self):
            spec = getattr(self, field.name)
            quantity = field.name
            if spec is None or (quantity == "distance" and self.parallax is not None):
                out[quantity] = None
            elif isinstance(spec, tuple):
                if len(spec) != 2:
                    what = UNITS[quantity][1]
                    raise CatalogError(f"expected a column name or a (p16, p84) pair for {what}, got {spec!r}")
                out[quantity] = tuple(column(table[name], name, quantity, length_unit) for name in spec)
            else:
                out[quantity] = column(table[spec], spec, quantity, length_unit)
        return out


def check_distance_sources(*, distance_err: bool, parallax: bool, parallax_err: bool) -> None:
    """Check that the distance information given (columns or arrays) combines: a parallax error needs a parallax,
    and a parallax's posterior replaces a distance uncertainty.

    Raises
    ------
    CatalogError
        ``parallax_err`` without ``parallax``, or ``parallax`` together with ``distance_err``.
    """
    if parallax_err and not parallax:
        raise CatalogError("parallax_err given without parallax")
    if parallax and distance_err:
        raise CatalogError("give either distance_err or parallax/parallax_err, not both")
