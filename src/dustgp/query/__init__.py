"""Point queries of a :class:`~dustgp.posterior_map.PosteriorMap` with the conventions of the ``dustmaps`` package.

:class:`DustMapQuery` (:mod:`dustgp.query.dustmap_query`) answers "how much extinction lies in front of this
(l, b, d)?" for any number of positions at once, the way ``dustmaps`` (Green 2018, JOSS 3, 695) answers it for
Bayestar or for Edenhofer et al. (2023): ``query(coords, mode=...)`` with ``__call__`` as an alias,
``query_gal(l, b, d)`` for bare numbers (deg, deg, **kpc**), output shaped like the input coordinates with samples
or percentiles on the last axis, NaN outside the map; extinction is continuous in distance (linear inside a cell).
:func:`query_table` and :func:`extinction_plane` (:mod:`dustgp.query.tables`) query a whole table or the plane of
the sky at one distance. :class:`DustgpQuery` (:mod:`dustgp.query.dustmaps_class`, created on first use, so that
dustgp does not need ``dustmaps``) is the same thing as a subclass of ``dustmaps.map_base.DustMap``.

Importing this package registers :class:`DustMapQuery` behind
:meth:`PosteriorMap.query <dustgp.posterior_map.PosteriorMap.query>`.
"""

from __future__ import annotations

from typing import Any

from .dustmap_query import FLAGS_DTYPE, MODES, DustMapQuery, QueryError
from .dustmaps_class import dustgp_query_class
from .tables import TABLE_COLUMNS, extinction_plane, query_table

# DustgpQuery is made on first access by the module __getattr__ below (it subclasses an optional dependency)
__all__ = [
    "FLAGS_DTYPE",
    "MODES",
    "TABLE_COLUMNS",
    "DustMapQuery",
    "DustgpQuery",
    "QueryError",
    "extinction_plane",
    "query_table",
]


def __getattr__(name: str) -> Any:
    # PEP 562: ``from dustgp.query import DustgpQuery`` builds the dustmaps subclass on demand, so importing
    # dustgp never imports dustmaps (which pulls in healpy and requests).
    if name == "DustgpQuery":
        return dustgp_query_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
