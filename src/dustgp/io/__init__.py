"""Files: NetCDF, FITS cube and HEALPix × distance products of a :class:`~dustgp.posterior_map.PosteriorMap`.

dustgp's science modules never open files; this package does (catalogue reading aside). Every writer is atomic
(it writes a temporary file in the target directory and renames it into place, so a reader never sees half a
file) and refuses to replace an existing file unless ``overwrite=True``. Every product carries its provenance
(:mod:`dustgp.io.provenance`): the dustgp version that wrote it, the run configuration, the seed, the
hyperparameters, a UTC timestamp and the paper that defines the method (Dharmawardena et al. 2022, A&A 658, A166).

Formats
-------
NetCDF (``.nc``, :func:`write_netcdf`, :mod:`dustgp.io.netcdf`)
    The complete map, lossless: dimensions ``distance``, ``b``, ``l``, ``percentile``, ``sample``; cell
    centres as coordinates with ``units``; cell edges (``distance_edges``, ``l_edges``, ``b_edges``) and
    CF-style ``*_bounds``; ghost cells included and flagged (``is_ghost``, attribute ``ghost_cells``).
FITS cube (``.fits``, :func:`write_fits`, :mod:`dustgp.io.fits_cube`)
    Images with a celestial WCS (``GLON-CAR``/``GLAT-CAR``, longitude increasing to the left) and a distance
    axis; see :func:`write_fits` for the HDU list. Lossless through :func:`read_fits`.
HEALPix (``.fits``, :func:`write_healpix`, :mod:`dustgp.io.healpix`)
    Density and extinction on HEALPix pixels × distance cells, one binary table per quantity and one column
    per distance cell, readable by ``healpy.read_map``; see :func:`write_healpix`.

:func:`read_map` and :func:`write_map` (:mod:`dustgp.io.formats`) choose the format from the file name; importing
this package registers them behind :meth:`PosteriorMap.load <dustgp.posterior_map.PosteriorMap.load>` and
:meth:`PosteriorMap.save <dustgp.posterior_map.PosteriorMap.save>`. :func:`read_emission`
(:mod:`dustgp.io.emission_maps`) reads the dust-emission maps of others. Nothing here imports torch.
"""

from __future__ import annotations

from .._atomic import atomic_path
from ._common import MapFileError
from .emission_maps import read_emission
from .fits_cube import celestial_wcs, read_fits, write_fits
from .formats import check_output_path, read_map, write_map
from .healpix import HealpixPosteriorMap, default_nside, read_healpix, write_healpix
from .netcdf import read_netcdf, write_netcdf
from .provenance import REFERENCE

__all__ = [
    "REFERENCE",
    "HealpixPosteriorMap",
    "MapFileError",
    "atomic_path",
    "celestial_wcs",
    "check_output_path",
    "default_nside",
    "read_emission",
    "read_fits",
    "read_healpix",
    "read_map",
    "read_netcdf",
    "write_fits",
    "write_healpix",
    "write_map",
    "write_netcdf",
]
