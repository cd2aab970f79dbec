"""Any dustgp map file: the format chosen from the file name (or asked for), and the checks made before writing.

:func:`read_map` and :func:`write_map` are the functions behind
:meth:`PosteriorMap.load <dustgp.posterior_map.PosteriorMap.load>` and
:meth:`PosteriorMap.save <dustgp.posterior_map.PosteriorMap.save>`: this module registers them with the map record
on import (:func:`dustgp.posterior_map.register_product`), so that the record imports nothing above it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from astropy.io import fits

from ..posterior_map import PosteriorMap, register_product
from ._common import PathType, _reading
from .fits_cube import read_fits, write_fits
from .healpix import HealpixPosteriorMap, read_healpix, write_healpix
from .netcdf import read_netcdf, write_netcdf

__all__ = ["FITS_SUFFIXES", "NETCDF_SUFFIXES", "check_output_path", "read_map", "write_map"]

NETCDF_SUFFIXES = (".nc", ".nc4", ".netcdf")
FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fts.gz")


def _kind(path: PathType) -> Literal["netcdf", "fits"]:
    name = Path(path).name.lower()
    if name.endswith(NETCDF_SUFFIXES):
        return "netcdf"
    if name.endswith(FITS_SUFFIXES):
        return "fits"
    raise ValueError(f"{path}: unknown format; expected a name ending in {NETCDF_SUFFIXES + FITS_SUFFIXES}")


def read_map(path: PathType) -> PosteriorMap | HealpixPosteriorMap:
    """Read any dustgp map file, choosing the reader from the name and, for FITS, the headers.

    Parameters
    ----------
    path : str or os.PathLike
        ``.nc`` (NetCDF) or ``.fits`` / ``.fit`` / ``.fts`` (optionally ``.gz``): a FITS cube
        (:func:`read_fits`) or a HEALPix file (``PIXTYPE = 'HEALPIX'``, :func:`read_healpix`).

    Returns
    -------
    PosteriorMap or HealpixPosteriorMap

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    MapFileError
        The file is damaged, of another kind, or misses a part of a dustgp map (the message names it).
    """
    if _kind(path) == "netcdf":
        return read_netcdf(path)
    with _reading(path, "FITS map"), fits.open(path, memmap=False) as hdul:
        healpix = any(str(h.header.get("PIXTYPE", "")).upper() == "HEALPIX" for h in hdul[1:3])
    return read_healpix(path) if healpix else read_fits(path)


_WRITERS: dict[str, Callable[..., Path]] = {
    "netcdf": write_netcdf,
    "fits": write_fits,
    "healpix": write_healpix,
}


def write_map(
    dmap: PosteriorMap,
    path: PathType,
    *,
    format: Literal["netcdf", "fits", "healpix"] | None = None,
    **kwargs: Any,
) -> Path:
    """Write a map in the format its name implies (``.nc``: NetCDF, ``.fits``: FITS cube) or ``format``.

    Parameters
    ----------
    dmap : PosteriorMap
    path : str or os.PathLike
    format : {"netcdf", "fits", "healpix"}, optional
        Overrides the choice by name (``"healpix"`` must be asked for).
    **kwargs
        Passed to the writer (``overwrite``, ``samples``, ``nside``, ...).

    Returns
    -------
    pathlib.Path
    """
    kind = format or _kind(path)
    if kind not in _WRITERS:
        raise ValueError(f"format: expected one of {sorted(_WRITERS)}, got {kind!r}")
    return _WRITERS[kind](dmap, path, **kwargs)


def check_output_path(
    path: PathType, *, overwrite: bool, format: Literal["netcdf", "fits", "healpix"] | None = None
) -> Path:
    """Check, before any computing, that a map can be written to ``path``.

    Parameters
    ----------
    path : str or os.PathLike
    overwrite : bool
        Whether an existing file may be replaced.
    format : {"netcdf", "fits", "healpix"}, optional
        The format; default chosen from the name, as :func:`write_map` does.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    ValueError
        The name has no known map suffix (and no ``format`` is given), or ``format`` is unknown.
    FileExistsError
        ``path`` exists and ``overwrite`` is False.
    FileNotFoundError
        The folder of ``path`` does not exist.
    """
    target = Path(path)
    kind = format or _kind(target)
    if kind not in _WRITERS:
        raise ValueError(f"format: expected one of {sorted(_WRITERS)}, got {kind!r}")
    if target.is_dir():
        raise IsADirectoryError(f"{target} is a folder; expected a map file name")
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} exists; pass --overwrite (overwrite=True) to replace it")
    if not target.parent.is_dir():
        raise FileNotFoundError(f"{target.parent}: no such directory")
    return target


register_product("write", write_map)  # behind PosteriorMap.save
register_product("read", read_map)  # behind PosteriorMap.load
