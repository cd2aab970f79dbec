"""The arrays a :class:`~dustgp.catalog.Catalog` holds, checked on the way in: read-only float64 copies in internal
units, one value per star (:func:`readonly`), and the tables of parallax-posterior nodes it keeps per number of
nodes (:func:`node_table`). Values out of range are the record's own checks (:mod:`dustgp.catalog.checks`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .checks import CatalogError

__all__ = ["node_table", "readonly"]


def readonly(values: Any, name: str, n: int | None, dtype: type = np.float64) -> np.ndarray:
    """A read-only 1-D copy of ``values`` (bare numbers in internal units), of ``n`` values when ``n`` is given.

    Raises
    ------
    CatalogError
        ``values`` carry a unit, are not 1-D or are not ``n`` (the message names the argument ``name``).
    """
    if getattr(values, "unit", None) is not None:
        raise CatalogError(
            f"{name}: Catalog() takes bare arrays in internal units (deg, pc, mag); "
            "use Catalog.from_arrays for values with units"
        )
    arr = np.array(values, dtype=dtype, copy=True)
    if arr.ndim != 1:
        raise CatalogError(f"{name}: expected a 1-D array, got ndim={arr.ndim}")
    if n is not None and arr.size != n:
        raise CatalogError(f"{name}: expected {n} values (one per star), got {arr.size}")
    arr.flags.writeable = False
    return arr


def node_table(k: Any, values: Any, n: int) -> np.ndarray:
    """The ``k`` nodes per star (pc) of an entry of a catalogue's ``distance_node_cache``: a read-only copy, (n, k).

    Raises
    ------
    CatalogError
        ``k`` is not an integer >= 1, the shape is not ``(n, k)``, or a node is not finite and > 0 pc.
    """
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise CatalogError(f"distance_node_cache: expected integer keys k >= 1 (nodes per star), got {k!r}")
    nodes = np.array(values, dtype=np.float64, copy=True)
    if nodes.shape != (n, k):
        raise CatalogError(f"distance_node_cache[{k}]: expected shape ({n}, {k}) (stars, nodes), got {nodes.shape}")
    if not np.all(np.isfinite(nodes) & (nodes > 0)):
        raise CatalogError(f"distance_node_cache[{k}]: expected finite distances > 0 pc")
    nodes.flags.writeable = False
    return nodes
