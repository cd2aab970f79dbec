"""``DustgpQuery``: a dustgp map as a ``dustmaps`` map, a subclass of ``dustmaps.map_base.DustMap``.

The class is built on first use (:func:`dustgp_query_class`, behind ``dustgp.query.DustgpQuery``), so that dustgp
does not need ``dustmaps``, which is an optional extra.
"""

from __future__ import annotations

from collections.abc import Sequence
from os import PathLike
from typing import Any

import astropy.units as u
import numpy as np
from astropy.coordinates import SkyCoord

from ..io import read_map
from ..posterior_map import PosteriorMap
from .dustmap_query import DustMapQuery

__all__ = ["dustgp_query_class"]

_DUSTGP_QUERY_CLASS: type | None = None


def dustgp_query_class() -> type:
    """Build (once) the ``dustmaps.map_base.DustMap`` subclass; imports dustmaps only now."""
    global _DUSTGP_QUERY_CLASS
    if _DUSTGP_QUERY_CLASS is not None:
        return _DUSTGP_QUERY_CLASS
    try:
        from dustmaps.map_base import DustMap as _DustmapsBase
        from dustmaps.map_base import ensure_flat_galactic
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("DustgpQuery needs the dustmaps package: pip install 'dustgp[dustmaps]'") from err

    class DustgpQuery(_DustmapsBase):
        """A dustgp map as a ``dustmaps`` map: ``DustgpQuery(dmap_or_path)(coords, mode=...)``.

        Parameters
        ----------
        map_or_path : PosteriorMap, str or os.PathLike
            A map, or a file that :func:`dustgp.io.read_map` reads (NetCDF or FITS cube).
        integrated, seed
            As in :class:`dustgp.query.DustMapQuery`.

        Notes
        -----
        Behaves like the other ``dustmaps`` 3D maps: ``query`` is wrapped by ``ensure_flat_galactic``,
        ``query_gal(l, b, d)`` takes deg, deg and **kpc**, ``distances`` and ``distance_bounds`` are
        Quantities. Map: Dharmawardena et al. 2022, A&A 658, A166.
        """

        def __init__(
            self,
            map_or_path: PosteriorMap | str | PathLike[str],
            *,
            integrated: bool = True,
            seed: int | np.random.Generator | None = None,
        ) -> None:
            super().__init__()
            if isinstance(map_or_path, str | PathLike):
                map_or_path = read_map(map_or_path)
            self._query = DustMapQuery(map_or_path, integrated=integrated, seed=seed)

        @ensure_flat_galactic
        def query(
            self,
            coords: SkyCoord,
            mode: str = "mean",
            pct: float | Sequence[float] | None = None,
            return_flags: bool = False,
        ) -> Any:
            """Extinction at ``coords`` (mag); see :meth:`dustgp.query.DustMapQuery.query`."""
            return self._query.query(coords, mode=mode, pct=pct, return_flags=return_flags)

        @property
        def distances(self) -> u.Quantity:
            """Distance-cell centres, pc."""
            return self._query.distances

        @property
        def distance_bounds(self) -> u.Quantity:
            """Distance-cell edges, pc."""
            return self._query.distance_bounds

        @property
        def dustmap(self) -> PosteriorMap:
            """The underlying :class:`dustgp.posterior_map.PosteriorMap`."""
            return self._query.dmap

    DustgpQuery.__module__ = __package__  # its public home: dustgp.query
    _DUSTGP_QUERY_CLASS = DustgpQuery
    return DustgpQuery
