"""Star catalogues in fixed internal units: reading, validating, distance posteriors, and Gaia DR3 stars.

A :class:`Catalog` holds, per star, Galactic ``l`` and ``b`` (deg), distance (pc) with an optional uncertainty (pc),
optionally the parallax (mas) its distance posterior comes from, and observed extinction with its uncertainty (mag).
The modules, from the strict core outwards:

- :mod:`~dustgp.catalog.checks`: :class:`CatalogError`, the plausibility limits, and messages naming the column,
  the expectation and the rows.
- :mod:`~dustgp.catalog.units`: the units rule at the edge (a unit is converted; no unit means deg, pc, mag, mas,
  or ``distance_unit``).
- :mod:`~dustgp.catalog.columns`: :class:`ColumnMap`, which input column holds which quantity.
- :mod:`~dustgp.catalog.rows`: every input row checked, bad ones raised or dropped.
- :mod:`~dustgp.catalog.readers`: :meth:`Catalog.read`, :meth:`Catalog.from_table`, :meth:`Catalog.from_arrays`.
- :mod:`~dustgp.catalog.gradient`: the extinction gradient dA/dd that folds distance errors into sigma_A.
- :mod:`~dustgp.catalog.arrays`: the record's arrays checked on the way in (read-only copies, cached node tables).
- :mod:`~dustgp.catalog.record`: the :class:`Catalog` record itself; :mod:`~dustgp.catalog.output` writes it out.
- :mod:`~dustgp.catalog.distances`: distance posteriors as equal-mass quadrature nodes (log-normal, parallax), and
  the percentiles of a parallax's posterior.
- :mod:`~dustgp.catalog.gaia_query`, :mod:`~dustgp.catalog.gaia_cache`, :mod:`~dustgp.catalog.gaia_archive`,
  :mod:`~dustgp.catalog.gaia`: Gaia DR3 GSP-Phot stars fetched for a region, chunk by chunk through a checked cache.

Only layer 0 of dustgp lies below (the grid, atomic writes, the version): nothing here imports torch. The names
below are the public ones; the modules' other names serve their siblings.
"""

from __future__ import annotations

from .checks import (
    MAX_ABS_EXTINCTION,
    MAX_ABS_PARALLAX,
    MAX_DISTANCE,
    MAX_ROWS_SHOWN,
    MIN_EXTINCTION_ERR,
    CatalogError,
)
from .columns import ColumnMap
from .distances import (
    DISTANCE_NODES,
    PARALLAX_LENGTH_SCALE,
    lognormal_nodes,
    parallax_distance_percentiles,
    parallax_nodes,
    parallax_percentiles_and_nodes,
    volume_prior_posterior,
)
from .gaia import catalog_for_grid, fetch_gaia, gaia_catalog, read_gaia_table, write_gaia_table
from .gaia_archive import GAIA_TAP_URL, GaiaError, TapJob, TapService, default_service, fetch_gaia_table
from .gaia_cache import ChunkCache
from .gaia_query import (
    CATALOG_COLUMNS,
    COLUMN_UNITS,
    COLUMNS,
    GAIA_TABLE,
    MAX_CHUNK_DEG,
    DistanceFrom,
    GaiaCuts,
    Region,
    SkyChunk,
    adql_query,
    cut_keys,
    sky_chunks,
)
from .gradient import GRADIENT_BLOCK_ELEMENTS, estimate_extinction_gradient
from .record import Catalog
from .rows import DistanceKind, OnBad
from .units import KPC_WARNING_BELOW

__all__ = [
    "CATALOG_COLUMNS",
    "COLUMNS",
    "COLUMN_UNITS",
    "DISTANCE_NODES",
    "GAIA_TABLE",
    "GAIA_TAP_URL",
    "GRADIENT_BLOCK_ELEMENTS",
    "KPC_WARNING_BELOW",
    "MAX_ABS_EXTINCTION",
    "MAX_ABS_PARALLAX",
    "MAX_CHUNK_DEG",
    "MAX_DISTANCE",
    "MAX_ROWS_SHOWN",
    "MIN_EXTINCTION_ERR",
    "PARALLAX_LENGTH_SCALE",
    "Catalog",
    "CatalogError",
    "ChunkCache",
    "ColumnMap",
    "DistanceFrom",
    "DistanceKind",
    "GaiaCuts",
    "GaiaError",
    "OnBad",
    "Region",
    "SkyChunk",
    "TapJob",
    "TapService",
    "adql_query",
    "catalog_for_grid",
    "cut_keys",
    "default_service",
    "estimate_extinction_gradient",
    "fetch_gaia",
    "fetch_gaia_table",
    "gaia_catalog",
    "lognormal_nodes",
    "parallax_distance_percentiles",
    "parallax_nodes",
    "parallax_percentiles_and_nodes",
    "read_gaia_table",
    "sky_chunks",
    "volume_prior_posterior",
    "write_gaia_table",
]
