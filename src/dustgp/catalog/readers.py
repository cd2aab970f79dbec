"""The friendly constructors of a catalogue: ``Catalog.read``, ``Catalog.from_table`` and ``Catalog.from_arrays``.

They accept any table astropy reads, columns named by the user (:class:`~dustgp.catalog.columns.ColumnMap`), astropy
units (converted by the rule of :mod:`dustgp.catalog.units`) and 16th/84th-percentile pairs, check every row
(:mod:`dustgp.catalog.rows`; a parallax with its error becomes the median and width of its distance posterior),
and build the catalogue with the strict core constructor, then fold the distance uncertainties into the extinction
uncertainties if asked.

The functions here take the class as their first argument; :class:`~dustgp.catalog.Catalog` binds them as its
classmethods (as astropy's ``Table.read`` is defined apart from ``Table``), so this module needs nothing of the
record but its constructor and :meth:`~dustgp.catalog.Catalog.inflate_for_distance`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any, NamedTuple, TypeVar

import astropy.units as u
from astropy.table import Table

from .checks import CatalogError
from .columns import ColumnMap, check_distance_sources
from .distances import PARALLAX_LENGTH_SCALE
from .rows import DistanceKind, OnBad, assemble, check_options
from .units import column, stated_unit

__all__ = ["from_arrays", "from_table", "read"]

logger = logging.getLogger(__name__)

#: The class being built (:class:`~dustgp.catalog.Catalog`): the ``cls`` of the classmethods.
CatalogT = TypeVar("CatalogT")


def read(
    cls: type[CatalogT],
    path: str | os.PathLike[str],
    *,
    l: str = "l",
    b: str = "b",
    distance: str = "distance",
    extinction: str = "A0",
    extinction_err: str | tuple[str, str] = "A0_err",
    distance_err: str | tuple[str, str] | None = None,
    parallax: str | None = None,
    parallax_err: str | None = None,
    parallax_length_scale: float = PARALLAX_LENGTH_SCALE,
    distance_unit: str | u.UnitBase | None = None,
    format: str | None = None,
    on_bad: OnBad = "raise",
    extinction_err_floor: float = 0.0,
    inflate: bool = True,
    distance_kind: DistanceKind = "posterior",
    read_kwargs: Mapping[str, Any] | None = None,
) -> CatalogT:
    """Read a catalogue from any table file astropy reads (FITS, ECSV, CSV, Parquet, VOTable, ...).

    Parameters
    ----------
    path : str or os.PathLike
        The file. Files ending in ``.csv`` (or ``.csv.gz``) are read as ``format="ascii.csv"`` unless
        ``format`` says otherwise.
    l, b, distance, extinction, extinction_err, distance_err, parallax, parallax_err, parallax_length_scale, \
distance_unit, on_bad, extinction_err_floor, inflate, distance_kind
        Column mapping and options, as in :meth:`from_table`.
    format : str, optional
        Passed to :meth:`astropy.table.Table.read`.
    read_kwargs : mapping, optional
        Further keyword arguments for :meth:`astropy.table.Table.read` (e.g. ``hdu=2``).

    Returns
    -------
    Catalog

    Raises
    ------
    CatalogError
        See :meth:`from_table`.
    """
    name = os.fspath(path)
    if format is None and str(name).lower().endswith((".csv", ".csv.gz")):
        format = "ascii.csv"
    table = Table.read(name, format=format, **dict(read_kwargs or {}))
    logger.info("read %d rows from %s", len(table), name)
    check_options(on_bad, extinction_err_floor, parallax_length_scale, distance_kind)
    columns = ColumnMap(l, b, distance, extinction, extinction_err, distance_err, parallax, parallax_err)
    options = _Options(distance_unit, on_bad, extinction_err_floor, parallax_length_scale, inflate, distance_kind)
    return _from_columns(cls, table, columns, options)


def from_table(
    cls: type[CatalogT],
    table: Table,
    *,
    l: str = "l",
    b: str = "b",
    distance: str = "distance",
    extinction: str = "A0",
    extinction_err: str | tuple[str, str] = "A0_err",
    distance_err: str | tuple[str, str] | None = None,
    parallax: str | None = None,
    parallax_err: str | None = None,
    parallax_length_scale: float = PARALLAX_LENGTH_SCALE,
    distance_unit: str | u.UnitBase | None = None,
    on_bad: OnBad = "raise",
    extinction_err_floor: float = 0.0,
    inflate: bool = True,
    distance_kind: DistanceKind = "posterior",
) -> CatalogT:
    r"""Build a catalogue from an in-memory :class:`~astropy.table.Table` (or ``QTable``).

    Parameters
    ----------
    table : astropy.table.Table
        The input; its row numbers (0-based) are those quoted in messages and in :attr:`row_index` /
        :attr:`dropped_rows`.
    l, b : str, optional
        Columns of Galactic longitude and latitude. Unit: any angle (converted to deg); none = deg.
    distance : str, optional
        Column of distance. Unit: any length (kpc → pc, ...); none = ``distance_unit``, by default pc. Not
        used when ``parallax`` is given.
    extinction : str, optional
        Column of extinction. Unit: mag; none = mag.
    extinction_err : str or (str, str), optional
        Column of the 1-sigma extinction uncertainty, or a pair ``(p16, p84)`` of percentile columns, for
        which :math:`\sigma = (p_{84} - p_{16}) / 2`. Unit: mag; none = mag.
    distance_err : str or (str, str), optional
        Column of the 1-sigma distance uncertainty, or a ``(p16, p84)`` pair, as for ``extinction_err``.
        Unit: any length; none = ``distance_unit``, by default pc. Default: no distance uncertainty.
    parallax, parallax_err : str, optional
        Columns of parallax and its uncertainty (unit: any angle; none = mas), used instead of
        ``distance`` and ``distance_err``. With both, each star's distance posterior is
        :math:`p(d \mid \varpi) \propto d^2 e^{-d/L}\, \mathcal N(\varpi; 1000/d, \sigma_\varpi^2)`
        (an exponentially decreasing space density prior, Bailer-Jones 2015), never :math:`1/\varpi`:
        ``distance`` is its median and ``distance_err`` half its 16-84% width
        (:func:`~dustgp.catalog.parallax_distance_percentiles`); the catalogue keeps the parallaxes
        (:attr:`~dustgp.catalog.Catalog.parallax`, :attr:`~dustgp.catalog.Catalog.parallax_err`), and the fit
        averages over this posterior (:meth:`~dustgp.catalog.Catalog.distance_nodes`). Any parallax with
        :math:`\sigma_\varpi > 0` is then valid, zero and negative ones included. A parallax without
        ``parallax_err`` gives :math:`d = 1000 / \varpi` pc and no uncertainty; a non-positive parallax is then a
        bad row.
    parallax_length_scale : float, optional
        L of the prior, pc: default :data:`~dustgp.catalog.PARALLAX_LENGTH_SCALE` (1350 pc, Astraatmadja &
        Bailer-Jones 2016, whole sky); a smaller L suits a nearby population (within a few hundred pc).
    distance_unit : str or astropy.units.Unit, optional
        Unit of the distance columns that carry none (e.g. ``"kpc"``); default pc. A column with a unit
        that differs from it is an error. Without it, a unitless distance column whose values are all
        below ``KPC_WARNING_BELOW`` (30) pc gets a warning that it looks like kpc; ``distance_unit="pc"``
        states that it is not.
    on_bad : {"raise", "drop"}, optional
        What to do with bad rows (see Notes): raise a :class:`CatalogError` listing them (default), or
        drop them, log a warning with counts per reason, and record them in :attr:`dropped_rows`.
    extinction_err_floor : float, optional
        Lower bound on the extinction uncertainty, mag: :math:`\sigma = \max(\sigma, \text{floor})`,
        applied before the checks (so a floor > 0 rescues rows with :math:`\sigma = 0`).
    inflate : bool, optional
        If True (default) and the catalogue has distance uncertainties, fold them into the extinction
        uncertainties with :meth:`inflate_for_distance` (gradient estimated from the data).
    distance_kind : {"posterior", "measurement"}, optional
        What ``distance`` and ``distance_err`` are. ``"posterior"`` (default): each star's distance posterior,
        median and width, as Bayesian catalogues give them (Gaia GSP-Phot, StarHorse, Bailer-Jones et al.),
        whose prior is in them already. ``"measurement"``: a log-normal measurement of the distance, such as a
        photometric distance or :func:`dustgp.simulate`'s scattered distances; the catalogue then holds the
        posterior under a uniform space density, :math:`p(d) \propto d^2`
        (:meth:`~dustgp.catalog.Catalog.with_volume_prior`), which moves each distance out by
        :math:`e^{3 s^2}`, the Malmquist correction. Read as posteriors, measured distances put the dust too
        near. Needs ``distance_err`` and no parallaxes (parallaxes get their own prior).

    Returns
    -------
    Catalog

    Raises
    ------
    CatalogError
        A missing column (the message lists the columns available), a column with a unit that does not
        convert (the message names the column, the unit found and the unit expected), a non-numeric
        column, bad rows with ``on_bad="raise"``, no valid star left with ``on_bad="drop"``, or
        ``distance_kind="measurement"`` without ``distance_err`` or with parallaxes.

    Notes
    -----
    A row is bad if, in any column used: a value is NaN, inf or masked; :math:`|b| > 90` deg; distance
    :math:`\le 0`; parallax :math:`\le 0` (without ``parallax_err``); a distance uncertainty :math:`< 0`; a
    parallax uncertainty :math:`\le 0`; a percentile pair has :math:`p_{84} < p_{16}`; the extinction
    uncertainty after the floor is :math:`\le 0`. Implausible values are bad rows too, reported the same way:
    distance beyond ``MAX_DISTANCE`` (100 kpc; without ``parallax_err``, parallax below 0.01 mas; with it, a
    posterior median beyond), :math:`|\varpi|` above ``MAX_ABS_PARALLAX`` (1000 mas, with ``parallax_err``),
    :math:`|A|` above ``MAX_ABS_EXTINCTION`` (30 mag) and an
    extinction uncertainty below ``MIN_EXTINCTION_ERR`` (1e-6 mag): such values are unit or sentinel
    errors, and one of them is enough to spoil a map. Negative extinctions are valid (noisy measurements
    of small extinctions). Rows that repeat another row's l, b, distance and extinction are kept, with a
    warning giving their number: each counts as a star of its own.
    """
    if not isinstance(table, Table):
        raise TypeError(f"expected an astropy Table, got {type(table).__name__}")
    check_options(on_bad, extinction_err_floor, parallax_length_scale, distance_kind)
    columns = ColumnMap(l, b, distance, extinction, extinction_err, distance_err, parallax, parallax_err)
    options = _Options(distance_unit, on_bad, extinction_err_floor, parallax_length_scale, inflate, distance_kind)
    return _from_columns(cls, table, columns, options)


def from_arrays(
    cls: type[CatalogT],
    l: Any,
    b: Any,
    distance: Any | None,
    extinction: Any,
    extinction_err: Any,
    *,
    distance_err: Any | None = None,
    parallax: Any | None = None,
    parallax_err: Any | None = None,
    parallax_length_scale: float = PARALLAX_LENGTH_SCALE,
    distance_unit: str | u.UnitBase | None = None,
    on_bad: OnBad = "raise",
    extinction_err_floor: float = 0.0,
    inflate: bool = True,
    distance_kind: DistanceKind = "posterior",
) -> CatalogT:
    r"""Build a catalogue from arrays or :class:`~astropy.units.Quantity` objects.

    Parameters
    ----------
    l, b : array_like or Quantity, shape (n,)
        Galactic longitude and latitude; any angle unit, bare numbers are deg.
    distance : array_like or Quantity, shape (n,), or None
        Distance; any length unit, bare numbers are in ``distance_unit`` (default pc). None when ``parallax`` is
        given (the distance is then that of the parallax, see :meth:`from_table`).
    extinction, extinction_err : array_like or Quantity, shape (n,)
        Observed extinction and its 1-sigma uncertainty; mag, bare numbers are mag.
    distance_err : array_like or Quantity, shape (n,), optional
        Distance uncertainty; any length unit, bare numbers are in ``distance_unit`` (default pc).
    parallax, parallax_err : array_like or Quantity, shape (n,), optional
        Parallax and its 1-sigma uncertainty, used instead of ``distance`` and ``distance_err``; any angle unit,
        bare numbers are mas. With both, each star's distance posterior is
        :math:`p(d \mid \varpi) \propto d^2 e^{-d/L}\, \mathcal N(\varpi; 1000/d, \sigma_\varpi^2)`, as in
        :meth:`from_table`: any sign of parallax is valid; a parallax alone gives :math:`d = 1000 / \varpi` pc.
    parallax_length_scale : float, optional
        L of the prior, pc (default :data:`~dustgp.catalog.PARALLAX_LENGTH_SCALE`, 1350 pc).
    distance_unit, on_bad, extinction_err_floor, inflate, distance_kind
        As in :meth:`from_table`; row numbers are positions in the arrays, and messages name the
        arguments.

    Returns
    -------
    Catalog

    Raises
    ------
    CatalogError
        Arrays that are not 1-D or not of one length, units that do not convert, both or neither of ``distance``
        and ``parallax``, ``parallax_err`` without ``parallax``, ``parallax`` with ``distance_err``, a
        ``parallax_length_scale`` that is not finite and > 0 pc, bad rows (see :meth:`from_table`).
    """
    check_options(on_bad, extinction_err_floor, parallax_length_scale, distance_kind)
    check_distance_sources(
        distance_err=distance_err is not None, parallax=parallax is not None, parallax_err=parallax_err is not None
    )
    if (distance is None) == (parallax is None):
        raise CatalogError(
            "distance, parallax: expected one of them (a parallax's distance is the median of its posterior), "
            f"got {'both' if parallax is not None else 'neither'}"
        )
    length = stated_unit(distance_unit, "distance_unit", u.pc, "length")
    given = {"l": l, "b": b, "distance": distance, "extinction": extinction, "extinction_err": extinction_err}
    given |= {"distance_err": distance_err, "parallax": parallax, "parallax_err": parallax_err}
    cols = {
        name: column(values, name, name, length, one_d=True) for name, values in given.items() if values is not None
    }
    sizes = {name: c.values.size for name, c in cols.items()}
    if len(set(sizes.values())) > 1:
        raise CatalogError(f"expected arrays of one length, got sizes {sizes}")
    fields = assemble(
        n_rows=sizes["l"],
        **{name: cols.get(name) for name in given},
        on_bad=on_bad,
        extinction_err_floor=extinction_err_floor,
        parallax_length_scale=parallax_length_scale,
    )
    return _build(cls, fields, inflate, distance_kind)


class _Options(NamedTuple):
    """The options of :func:`read` and :func:`from_table` besides the column mapping."""

    distance_unit: str | u.UnitBase | None
    on_bad: OnBad
    extinction_err_floor: float
    parallax_length_scale: float
    inflate: bool
    distance_kind: DistanceKind


def _from_columns(cls: type[CatalogT], table: Table, columns: ColumnMap, options: _Options) -> CatalogT:
    """The catalogue of the columns ``columns`` names in ``table`` (see :func:`from_table`)."""
    columns.check_present(table)
    length = stated_unit(options.distance_unit, "distance_unit", u.pc, "length")
    fields = assemble(
        n_rows=len(table),
        **columns.read(table, length),
        on_bad=options.on_bad,
        extinction_err_floor=options.extinction_err_floor,
        parallax_length_scale=options.parallax_length_scale,
    )
    return _build(cls, fields, options.inflate, options.distance_kind)


def _build(cls: type[CatalogT], fields: Mapping[str, Any], inflate: bool, distance_kind: str) -> CatalogT:
    """``cls(**fields)``, its measured distances turned into posteriors (``distance_kind``), then its distance
    uncertainties folded into its extinction uncertainties if ``inflate``."""
    catalog: Any = cls(**fields)
    if distance_kind == "measurement":
        if catalog.parallax is not None or catalog.distance_err is None:
            given = "parallaxes" if catalog.parallax is not None else "no distance_err"
            raise CatalogError(
                f"distance_kind: 'measurement' expects distances with uncertainties (distance_err), got {given}"
            )
        catalog = catalog.with_volume_prior()
    if inflate and catalog.distance_err is not None:
        catalog = catalog.inflate_for_distance()
    return catalog
