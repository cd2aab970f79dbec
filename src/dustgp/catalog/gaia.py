"""Gaia DR3 stars for a region of the sky as a :class:`~dustgp.catalog.Catalog`: GSP-Phot extinctions and distances.

This module turns a region — a :class:`~dustgp.grid.Grid` or (l, b, d) bounds — into the stars of Gaia DR3's
``gaiadr3.gaia_source`` with GSP-Phot A0 and distance, and returns them as a catalogue whose distance percentiles
feed the distance-uncertainty handling (:meth:`~dustgp.catalog.Catalog.inflate_for_distance`). The pieces, from
the strict core outwards:

- :mod:`dustgp.catalog.gaia_query`: :class:`~dustgp.catalog.Region`, :class:`~dustgp.catalog.GaiaCuts`, the sky
  chunks and the ADQL text; no network.
- :mod:`dustgp.catalog.gaia_cache`: :class:`~dustgp.catalog.ChunkCache`, one checked FITS file per fetched chunk.
- :mod:`dustgp.catalog.gaia_archive`: :func:`~dustgp.catalog.fetch_gaia_table`, the chunks that are not cached
  fetched from the archive's TAP service with retries.
- here: :func:`gaia_catalog` (a fetched table as a catalogue), :func:`fetch_gaia` (both steps),
  :func:`write_gaia_table` / :func:`read_gaia_table`, and :func:`catalog_for_grid`, what a run file with
  ``[catalog] source = "gaia-dr3"`` executes.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from astropy.table import Table

from .._atomic import atomic_path
from ..grid import Grid
from .distances import PARALLAX_LENGTH_SCALE
from .gaia_archive import TapService, fetch_gaia_table, provenance
from .gaia_query import CATALOG_COLUMNS, COLUMNS, DistanceFrom, GaiaCuts, Region
from .record import Catalog
from .rows import OnBad, check_options

__all__ = ["catalog_for_grid", "fetch_gaia", "gaia_catalog", "read_gaia_table", "write_gaia_table"]

logger = logging.getLogger(__name__)


def gaia_catalog(
    table: Table,
    *,
    distance_from: DistanceFrom = "gspphot",
    on_bad: OnBad = "drop",
    extinction_err_floor: float = 0.0,
    inflate: bool = True,
    parallax_length_scale: float = PARALLAX_LENGTH_SCALE,
) -> Catalog:
    """A :class:`~dustgp.catalog.Catalog` from a table of Gaia stars (fetched, or read with :func:`read_gaia_table`).

    Extinction is GSP-Phot's A0 with :math:`\\sigma_A = (p_{84} - p_{16}) / 2`; the distance is GSP-Phot's
    with :math:`\\sigma_d` from its percentiles the same way (or, with ``distance_from = "parallax"``, the
    median and half the 16-84% width of the parallax's distance posterior under the prior of
    :meth:`~dustgp.catalog.Catalog.from_table` with L = ``parallax_length_scale`` (pc, default 1350), whose nodes
    the fit then averages over), folded into :math:`\\sigma_A` by
    :meth:`~dustgp.catalog.Catalog.inflate_for_distance` when ``inflate``. Rows the catalogue cannot use (e.g.
    GSP-Phot percentiles with :math:`p_{84} = p_{16}`) are dropped by default, with a warning that counts them.
    """
    if distance_from not in CATALOG_COLUMNS:
        raise ValueError(f"distance_from: expected one of {sorted(CATALOG_COLUMNS)}, got {distance_from!r}")
    return Catalog.from_table(
        table,
        **CATALOG_COLUMNS[distance_from],
        parallax_length_scale=parallax_length_scale,
        on_bad=on_bad,
        extinction_err_floor=extinction_err_floor,
        inflate=inflate,
    )


def fetch_gaia(
    region: Region | Grid,
    *,
    on_bad: OnBad = "drop",
    extinction_err_floor: float = 0.0,
    inflate: bool = True,
    parallax_length_scale: float = PARALLAX_LENGTH_SCALE,
    **fetch_options: Any,
) -> Catalog:
    """:func:`fetch_gaia_table` then :func:`gaia_catalog`: the Gaia DR3 stars of a region as a catalogue.

    ``on_bad``, ``extinction_err_floor``, ``inflate`` and ``parallax_length_scale`` (pc) are checked before the
    fetch and go to :func:`gaia_catalog`; ``fetch_options`` to :func:`fetch_gaia_table`.

    Examples
    --------
    >>> grid = Grid(l=(180, 225, 45), b=(-35, 0, 35), d=(300, 550, 25), ghost_cells=3)  # doctest: +SKIP
    >>> stars = fetch_gaia(grid, cache="gaia-cache")  # doctest: +SKIP
    """
    check_options(on_bad, extinction_err_floor, parallax_length_scale)
    table = fetch_gaia_table(region, **fetch_options)
    return gaia_catalog(
        table,
        distance_from=fetch_options.get("distance_from", "gspphot"),
        on_bad=on_bad,
        extinction_err_floor=extinction_err_floor,
        inflate=inflate,
        parallax_length_scale=parallax_length_scale,
    )


def write_gaia_table(table: Table, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write a fetched table (any format astropy writes, by suffix), atomically, with its provenance."""
    path = Path(path)
    with atomic_path(path, overwrite=overwrite) as tmp:
        table.write(tmp, overwrite=True)
    return path


def read_gaia_table(path: str | Path) -> Table:
    """Read a table written by :func:`write_gaia_table`, checking that it has the columns of :data:`COLUMNS`."""
    table = Table.read(path)
    missing = [c for c in COLUMNS if c not in table.colnames]
    if missing:
        raise ValueError(f"{path}: not a Gaia table of dustgp: no column {', '.join(missing)}")
    return table


def catalog_for_grid(
    grid: Grid,
    *,
    path: str | None = None,
    cache: str = "gaia-cache",
    padding_deg: float = 0.5,
    padding_fraction: float = 0.05,
    chunk_deg: float = 5.0,
    distance_from: DistanceFrom = "gspphot",
    cuts: Mapping[str, Any] | None = None,
    retries: int = 3,
    on_bad: OnBad = "drop",
    extinction_err_floor: float = 0.0,
    inflate: bool = True,
    parallax_length_scale: float = PARALLAX_LENGTH_SCALE,
    progress: bool = True,
    service: TapService | None = None,
) -> Catalog:
    """The Gaia DR3 stars of a grid: what a run file with ``[catalog] source = "gaia-dr3"`` executes.

    Parameters
    ----------
    grid : Grid
        The training grid; the stars' region is :meth:`Region.from_grid` with ``padding_deg`` and
        ``padding_fraction``.
    path : str, optional
        The fetched stars as a table file (e.g. ``"orion_stars.fits"``): read when it exists — after checking
        that it was fetched for this region, cuts and distance selection —, else fetched and written there.
    cache : str, optional
        Folder of fetched chunks (:class:`ChunkCache`).
    cuts : mapping, optional
        :class:`GaiaCuts` fields (a run file's ``[catalog.cuts]``); infinite bounds turn a cut off.
    chunk_deg, distance_from, retries, progress, service
        As in :func:`fetch_gaia_table`.
    on_bad, extinction_err_floor, inflate
        As in :func:`gaia_catalog`.
    parallax_length_scale : float, optional
        L of the space density prior of the parallaxes' distance posteriors, pc (default
        :data:`~dustgp.catalog.PARALLAX_LENGTH_SCALE`, 1350 pc), with ``distance_from = "parallax"``; a run file's
        ``[catalog] parallax_length_scale``.

    Raises
    ------
    CatalogError
        ``on_bad``, ``extinction_err_floor`` or ``parallax_length_scale`` out of range, before any fetch (the
        message names the option and what was expected), or see :func:`gaia_catalog`.
    ValueError
        ``path`` holds stars fetched for another region, other cuts or another distance selection.
    GaiaError
        See :func:`fetch_gaia_table`.
    """
    check_options(on_bad, extinction_err_floor, parallax_length_scale)  # now, not after a fetch
    region = Region.from_grid(grid, padding_deg=padding_deg, padding_fraction=padding_fraction)
    gaia_cuts = GaiaCuts.from_dict(cuts)
    table = None
    if path is not None and Path(path).exists():
        table = read_gaia_table(path)
        wanted = provenance(region, gaia_cuts, distance_from, 0)
        for key, what in (("REGION", "region"), ("CUTS", "cuts"), ("DISTFROM", "distance selection")):
            found = table.meta.get(key)
            if found is None or _loads(found) != _loads(wanted[key]):
                raise ValueError(
                    f"{path} holds Gaia stars for another {what} ({key} {found!r}, this run wants {wanted[key]!r}); "
                    "delete it (the chunk cache makes a new fetch cheap) or give another path"
                )
        logger.info("read %d Gaia DR3 stars from %s", len(table), path)
    if table is None:
        table = fetch_gaia_table(
            region,
            cuts=gaia_cuts,
            cache=cache,
            chunk_deg=chunk_deg,
            distance_from=distance_from,
            service=service,
            retries=retries,
            progress=progress,
        )
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            write_gaia_table(table, path)
    return gaia_catalog(
        table,
        distance_from=distance_from,
        on_bad=on_bad,
        extinction_err_floor=extinction_err_floor,
        inflate=inflate,
        parallax_length_scale=parallax_length_scale,
    )


def _loads(text: Any) -> Any:
    try:
        return json.loads(text) if isinstance(text, str) and text[:1] in "[{" else text
    except ValueError:
        return text
