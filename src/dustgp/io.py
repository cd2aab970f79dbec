"""Files: NetCDF, FITS cube and HEALPix × distance products of a :class:`~dustgp.dustmap.DustMap`.

dustgp's science modules never open files; this module does (catalogue reading aside). Every writer is atomic
(it writes a temporary file in the target directory and renames it into place, so a reader never sees half a
file) and refuses to replace an existing file unless ``overwrite=True``. Every product carries its provenance:
the dustgp version that wrote it, the run configuration, the seed, the hyperparameters, a UTC timestamp and
the paper that defines the method (Dharmawardena et al. 2022, A&A 658, A166).

Formats
-------
NetCDF (``.nc``, :func:`write_netcdf`)
    The complete map, lossless: dimensions ``distance``, ``b``, ``l``, ``percentile``, ``sample``; cell
    centres as coordinates with ``units``; cell edges (``distance_edges``, ``l_edges``, ``b_edges``) and
    CF-style
    ``*_bounds``; ghost cells included and flagged (``is_ghost``, attribute ``ghost_cells``).
FITS cube (``.fits``, :func:`write_fits`)
    Images with a celestial WCS (``GLON-CAR``/``GLAT-CAR``, longitude increasing to the left) and a distance
    axis; see :func:`write_fits` for the HDU list. Lossless through :func:`read_fits`.
HEALPix (``.fits``, :func:`write_healpix`)
    Density and extinction on HEALPix pixels × distance cells, one binary table per quantity and one column
    per distance cell, readable by ``healpy.read_map``; see :func:`write_healpix`.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import astropy.units as u
import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from ._atomic import atomic_path
from ._version import __version__
from .dustmap import DustMap, register_product
from .grid import Grid

__all__ = [
    "REFERENCE",
    "HealpixDustMap",
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

log = logging.getLogger(__name__)

#: The paper that defines the method, written into every product.
REFERENCE = (
    "Dharmawardena, Bailer-Jones, Fouesneau & Foreman-Mackey 2022, A&A 658, A166 (doi:10.1051/0004-6361/202141298)"
)
DENSITY_UNIT = "mag / pc"
EXTINCTION_UNIT = "mag"
#: Relative tolerance under which cell spacings count as uniform (linear WCS axes).
UNIFORM_RTOL = 1e-9
NETCDF_SUFFIXES = (".nc", ".nc4", ".netcdf")
FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fts.gz")

PathType = str | os.PathLike[str]


class MapFileError(ValueError):
    """A file that is not a readable dustgp map: corrupt, truncated, of another kind, or missing a part."""


# (attribute of DustMap, long name, unit) of the summary arrays, in file order
_SUMMARIES = (
    ("density_mean", "posterior mean of the extinction density", DENSITY_UNIT),
    ("density_std", "posterior standard deviation of the extinction density", DENSITY_UNIT),
    ("density_percentiles", "posterior percentiles of the extinction density", DENSITY_UNIT),
    ("extinction_mean", "posterior mean extinction from the Sun to the cell's far edge", EXTINCTION_UNIT),
    ("extinction_std", "posterior std of extinction from the Sun to the cell's far edge", EXTINCTION_UNIT),
    (
        "extinction_percentiles",
        "posterior percentiles of the extinction from the Sun to the cell's far edge",
        EXTINCTION_UNIT,
    ),
)
_SAMPLES_LONG_NAME = "joint posterior samples of the extinction density"


# ----- shared helpers ---------------------------------------------------------------------------------------
def _package_version() -> str:
    return __version__


def _json_default(obj: Any) -> Any:
    """JSON for the numpy scalars and arrays that creep into configs and hyperparameters."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"meta: {type(obj).__name__} is not JSON-serialisable")


def _dumps(obj: Any) -> str:
    return json.dumps(obj, default=_json_default)


def _provenance(dmap: DustMap) -> dict[str, Any]:
    """What every product records about where it came from."""
    meta = dmap.meta or {}
    seed = meta.get("seed")
    if not isinstance(seed, int | np.integer) or isinstance(seed, bool):
        seed = None  # only integer seeds get a header card; anything else stays in the meta JSON
    return {
        "dustgp_version": _package_version(),
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "reference": REFERENCE,
        "config": _dumps(meta.get("config", {})),
        "hyperparameters": _dumps(meta.get("hyperparameters", {})),
        "seed": None if seed is None else int(seed),
        "meta": _dumps(meta),
        "grid": _dumps(dmap.grid.to_dict()),
    }


def _grid_from_edges(l_edges: np.ndarray, b_edges: np.ndarray, d_edges: np.ndarray, ghost_cells: int) -> Grid:
    """The grid with exactly these edges (``d_edges`` from 0, ghost cells included)."""
    grid = Grid(l=l_edges, b=b_edges, d=d_edges[ghost_cells:], ghost_cells=int(ghost_cells))
    # Grid re-derives explicit longitude edges by summing their differences, which can move the last bits; the
    # stored edges are the truth, so put them back (the differences are at the 1e-13 deg level).
    if not np.array_equal(grid.l_edges, l_edges):
        if not np.allclose(grid.l_edges, l_edges, rtol=0.0, atol=1e-9):
            raise ValueError(f"l_edges: stored {l_edges} do not describe a valid grid")
        object.__setattr__(grid, "l_edges", np.array(l_edges, dtype=float))
    if not np.array_equal(grid.d_edges, d_edges):
        raise ValueError(
            f"distance edges: stored ghost-cell edges {d_edges[: ghost_cells + 1]} are not the grid's "
            f"{grid.d_edges[: ghost_cells + 1]}"
        )
    return grid


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


@contextlib.contextmanager
def _reading(path: PathType, what: str) -> Iterator[None]:
    """Turn the errors of reading a damaged or foreign file into one :class:`MapFileError` naming ``path``."""
    if not Path(path).exists():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        yield
    except (MapFileError, FileNotFoundError):
        raise
    except KeyError as exc:
        part = str(exc.args[0] if exc.args else exc)
        detail = part if " " in part else f"{part!r} is missing"  # astropy's own: "Extension 'X' not found."
        raise MapFileError(f"{path}: not a dustgp {what}: {detail}") from exc
    except (OSError, ValueError, TypeError, IndexError, AttributeError, json.JSONDecodeError) as exc:
        raise MapFileError(f"{path}: cannot be read as a dustgp {what} ({type(exc).__name__}: {exc})") from exc


def _uniform_step(edges: np.ndarray) -> float | None:
    """The spacing of ``edges`` when it is uniform (to UNIFORM_RTOL), else None."""
    steps = np.diff(edges)
    step = (edges[-1] - edges[0]) / steps.size
    return float(step) if np.allclose(steps, step, rtol=UNIFORM_RTOL, atol=0.0) else None


def _native(a: np.ndarray) -> np.ndarray:
    """A native-byte-order copy of a FITS array (FITS is big-endian on disk)."""
    a = np.asarray(a)
    return np.array(a, dtype=a.dtype.newbyteorder("="), copy=True)


# ----- WCS --------------------------------------------------------------------------------------------------
def celestial_wcs(grid: Grid) -> WCS:
    """The 2D Galactic WCS of a grid's (l, b) pixels, with longitude increasing to the left.

    Pixel ``(x, y)`` (0-based) is longitude cell ``n_l - 1 - x`` (images store the l axis reversed) and
    latitude cell ``y``. Plate carrée (``CAR``) with the reference point on the equator (``CRVAL2 = 0``) is
    exactly linear in (l, b); ``CRVAL1`` is the longitude of the middle of the map, in [0, 360).

    Parameters
    ----------
    grid : Grid
        A grid with uniform l and b spacing.

    Returns
    -------
    astropy.wcs.WCS
        ``CTYPE = ('GLON-CAR', 'GLAT-CAR')``, ``CDELT1 < 0``, ``CUNIT = deg``.

    Raises
    ------
    ValueError
        If the l or b spacing is not uniform (a FITS WCS cannot describe it; use NetCDF).
    """
    dl, db = _uniform_step(grid.l_edges), _uniform_step(grid.b_edges)
    if dl is None or db is None:
        raise ValueError("celestial_wcs: expected uniform l and b spacing for a CAR WCS; use NetCDF instead")
    wcs = WCS(naxis=2)
    first_l = 0.5 * (grid.l_edges[-1] + grid.l_edges[-2])  # the largest longitude is pixel 1
    mid_l = 0.5 * (grid.l_edges[0] + grid.l_edges[-1])
    first_b = 0.5 * (grid.b_edges[0] + grid.b_edges[1])
    wcs.wcs.ctype = ["GLON-CAR", "GLAT-CAR"]
    wcs.wcs.cunit = ["deg", "deg"]
    wcs.wcs.cdelt = [-dl, db]
    # The reference longitude is the middle of the map, so that native longitudes stay within ±180°: with the
    # reference on an edge, a map wider than 180° wraps inside the projection and WCSAxes loses its labels.
    wcs.wcs.crval = [mid_l % 360.0, 0.0]
    # l = CRVAL1 + CDELT1 (p - CRPIX1): pixel 1 holds first_l; b = CDELT2 (p - CRPIX2) with CRVAL2 = 0
    wcs.wcs.crpix = [1.0 + (first_l - mid_l) / dl, 1.0 - first_b / db]
    wcs.wcs.set()
    wcs.pixel_shape = (grid.n_l, grid.n_b)
    return wcs


# ----- NetCDF -----------------------------------------------------------------------------------------------
def write_netcdf(
    dmap: DustMap, path: PathType, *, overwrite: bool = False, samples: bool = True, compress: bool = True
) -> Path:
    """Write the complete map to NetCDF-4 (HDF5, engine ``h5netcdf``); lossless.

    Parameters
    ----------
    dmap : DustMap
    path : str or os.PathLike
        Target file (``.nc``).
    overwrite : bool
        Replace an existing file.
    samples : bool
        Include the joint posterior samples ``density_samples`` when the map has them.
    compress : bool
        gzip the data variables (lossless).

    Returns
    -------
    pathlib.Path
        The file written.

    Notes
    -----
    Dimensions ``distance`` (n_d, ghost cells first), ``b``, ``l``, ``percentile``, ``sample``, ``nv`` (2) and
    ``*_edge``. Coordinates: cell centres ``distance`` (pc), ``b``, ``l`` (deg; l in [0, 360)),
    ``percentile``; edges ``distance_edges`` (from 0, pc), ``l_edges`` (unwrapped, deg), ``b_edges``; bounds
    ``distance_bounds`` etc., shape (n, 2). Data variables carry ``units`` and ``long_name``. Global
    attributes:
    ``dustgp_version``, ``created``, ``reference``, ``config`` / ``hyperparameters`` (JSON), ``seed``,
    ``ghost_cells``, ``dustgp_meta`` (the whole ``meta`` dict, JSON). When the map knows them, ``coverage``
    (int8 flag per cell: 1 where the stars constrain it) and ``reliable_distance_min`` / ``_max`` (pc, per
    ``b``, ``l``: nearest and farthest star of the column, NaN without stars).
    """
    import xarray as xr

    grid = dmap.grid
    prov = _provenance(dmap)
    cube = ("distance", "b", "l")

    def bounds(edges: np.ndarray) -> np.ndarray:
        return np.stack([edges[:-1], edges[1:]], axis=-1)

    coords = {
        "distance": (
            "distance",
            grid.d_centers,
            {"units": "pc", "long_name": "distance of the cell centre", "bounds": "distance_bounds"},
        ),
        "b": (
            "b",
            grid.b_centers,
            {"units": "deg", "long_name": "Galactic latitude of the cell centre", "bounds": "b_bounds"},
        ),
        "l": (
            "l",
            grid.l_centers,
            {"units": "deg", "long_name": "Galactic longitude of the cell centre", "bounds": "l_bounds"},
        ),
        "percentile": ("percentile", dmap.percentiles, {"units": "percent", "long_name": "percentile level"}),
        "distance_edges": ("distance_edge", grid.d_edges, {"units": "pc", "long_name": "distance edges"}),
        "l_edges": ("l_edge", grid.l_edges, {"units": "deg", "long_name": "longitude edges (unwrapped)"}),
        "b_edges": ("b_edge", grid.b_edges, {"units": "deg", "long_name": "latitude cell edges"}),
    }
    ghost = np.zeros(grid.n_d, dtype=np.int8)
    ghost[: grid.ghost_cells] = 1
    data_vars: dict[str, Any] = {
        "distance_bounds": (("distance", "nv"), bounds(grid.d_edges), {"units": "pc"}),
        "l_bounds": (("l", "nv"), bounds(grid.l_edges), {"units": "deg"}),
        "b_bounds": (("b", "nv"), bounds(grid.b_edges), {"units": "deg"}),
        "is_ghost": (
            "distance",
            ghost,
            {
                "long_name": "foreground ghost cell (0 .. d_min)",
                "flag_values": np.array([0, 1], dtype=np.int8),
                "flag_meanings": "region ghost",
            },
        ),
    }
    for name, long_name, unit in _SUMMARIES:
        dims = ("percentile", *cube) if name.endswith("percentiles") else cube
        data_vars[name] = (dims, getattr(dmap, name), {"units": unit, "long_name": long_name})
    if dmap.coverage is not None:
        data_vars["coverage"] = (
            cube,
            dmap.coverage.astype(np.int8),
            {
                "long_name": "cell constrained by stars (no farther than the farthest star of its column)",
                "flag_values": np.array([0, 1], dtype=np.int8),
                "flag_meanings": "prior_only constrained",
            },
        )
    if dmap.reliable_distance is not None:
        for k, which in enumerate(("min", "max")):
            data_vars[f"reliable_distance_{which}"] = (
                ("b", "l"),
                dmap.reliable_distance[k],
                {"units": "pc", "long_name": f"{'nearest' if k == 0 else 'farthest'} star of the column (NaN: none)"},
            )
    if samples and dmap.density_samples is not None:
        coords["sample"] = ("sample", np.arange(dmap.n_samples), {"long_name": "posterior sample index"})
        data_vars["density_samples"] = (
            ("sample", *cube),
            dmap.density_samples,
            {"units": DENSITY_UNIT, "long_name": _SAMPLES_LONG_NAME},
        )
    attrs = {
        "title": "dustgp 3D dust map",
        "dustgp_version": prov["dustgp_version"],
        "created": prov["created"],
        "reference": prov["reference"],
        "config": prov["config"],
        "hyperparameters": prov["hyperparameters"],
        "ghost_cells": np.int64(grid.ghost_cells),
        "dustgp_meta": prov["meta"],
        "comment": "extinction_* is integrated from the Sun to the FAR edge of each distance cell; the first "
        "ghost_cells distance cells are foreground ghost cells spanning 0 .. d_min",
    }
    if prov["seed"] is not None:
        attrs["seed"] = np.int64(prov["seed"])
    ds = xr.Dataset(data_vars=data_vars, coords=coords, attrs=attrs)
    encoding: dict[str, dict[str, Any]] = {}
    for name in ds.variables:
        if ds[name].dtype.kind == "f":
            # no fill value: NaN is stored as NaN and read back as NaN, nothing is masked
            encoding[str(name)] = {"_FillValue": None}
            if compress and name in ds.data_vars and ds[name].ndim >= 3:
                encoding[str(name)].update(zlib=True, complevel=4)
    with atomic_path(path, overwrite) as tmp:
        ds.to_netcdf(tmp, engine="h5netcdf", encoding=encoding)
    return Path(path)


def read_netcdf(path: PathType) -> DustMap:
    """Read a map written by :func:`write_netcdf`.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    DustMap
        Exactly the map that was written (values, dtypes, grid edges, percentile levels, meta).

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    MapFileError
        The file is damaged, of another kind, or misses a part of a dustgp map (the message names it).
    """
    import xarray as xr

    with _reading(path, "NetCDF map"), xr.open_dataset(path, engine="h5netcdf", decode_times=False) as ds:
        ds.load()
        required = ["l_edges", "b_edges", "distance_edges", "percentile", *(name for name, _, _ in _SUMMARIES)]
        missing = [name for name in required if name not in ds.variables]
        if missing:
            raise MapFileError(
                f"{path}: not a dustgp map: variable{'s' if len(missing) > 1 else ''} "
                f"{', '.join(map(repr, missing))} missing (it has {', '.join(map(repr, map(str, ds.variables)))})"
            )
        if "ghost_cells" not in ds.attrs:
            raise MapFileError(f"{path}: not a dustgp map: the global attribute 'ghost_cells' is missing")
        ghost_cells = int(ds.attrs["ghost_cells"])
        grid = _grid_from_edges(ds["l_edges"].values, ds["b_edges"].values, ds["distance_edges"].values, ghost_cells)
        arrays = {name: ds[name].values for name, _, _ in _SUMMARIES}
        samples = ds["density_samples"].values if "density_samples" in ds else None
        coverage = ds["coverage"].values.astype(bool) if "coverage" in ds else None
        reliable = None
        if "reliable_distance_min" in ds and "reliable_distance_max" in ds:
            reliable = np.stack([ds["reliable_distance_min"].values, ds["reliable_distance_max"].values])
        meta = _meta_from_attrs(ds.attrs)
        percentiles = ds["percentile"].values
    return DustMap(
        grid=grid,
        percentiles=percentiles,
        density_samples=samples,
        meta=meta,
        coverage=coverage,
        reliable_distance=reliable,
        **arrays,
    )


def _meta_from_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    if "dustgp_meta" in attrs:
        return json.loads(attrs["dustgp_meta"])
    meta: dict[str, Any] = {}
    for key in ("config", "hyperparameters"):
        if key in attrs:
            meta[key] = json.loads(attrs[key])
    if "seed" in attrs:
        meta["seed"] = int(attrs["seed"])
    return meta


# ----- FITS cube --------------------------------------------------------------------------------------------
def _cube_header(grid: Grid, extra_axis: str | None, tab: bool) -> fits.Header:
    """WCS cards of a ([k,] region distance, b, l) cube; l reversed as in :func:`celestial_wcs`.

    Written card by card rather than through ``astropy.wcs``, which cannot serialise a ``-TAB`` axis without
    its table.
    """
    sky = celestial_wcs(grid)
    region = grid.d_edges[grid.ghost_cells :]
    if tab:
        # index axis: the intermediate coordinate is the 1-based plane number, looked up in DISTANCE_TAB
        dist = ("DIST-TAB", 1.0, 1.0, 1.0)
    else:
        dist = ("DIST", 0.5 * (region[0] + region[1]), 1.0, (region[-1] - region[0]) / (region.size - 1))
    axes = [
        (sky.wcs.ctype[0], "deg", sky.wcs.crval[0], sky.wcs.crpix[0], sky.wcs.cdelt[0]),
        (sky.wcs.ctype[1], "deg", sky.wcs.crval[1], sky.wcs.crpix[1], sky.wcs.cdelt[1]),
        (dist[0], "pc", dist[1], dist[2], dist[3]),
    ]
    if extra_axis is not None:
        axes.append((extra_axis, "", 1.0, 1.0, 1.0))
    header = fits.Header()
    header["WCSAXES"] = len(axes)
    for i, (ctype, cunit, crval, crpix, cdelt) in enumerate(axes, start=1):
        header[f"CTYPE{i}"] = ctype
        if cunit:
            header[f"CUNIT{i}"] = cunit
        header[f"CRVAL{i}"] = float(crval)
        header[f"CRPIX{i}"] = float(crpix)
        header[f"CDELT{i}"] = float(cdelt)
    header["LONPOLE"] = (0.0, "native longitude of celestial pole")
    if tab:
        header["PS3_0"] = ("DISTANCE_TAB", "-TAB: EXTNAME of the lookup table")
        header["PS3_1"] = ("COORDS", "-TAB: column of distances (pc)")
        header["PS3_2"] = ("INDEX", "-TAB: column of 1-based plane numbers")
        header["PV3_3"] = (1, "-TAB: axis number in the coordinate array")
    return header


def _fits_column(name: str, arrays: np.ndarray, unit: str | None = None) -> fits.Column:
    """A binary-table column whose cells are arrays: ``arrays`` has shape (n_rows, *cell_shape)."""
    arrays = np.ascontiguousarray(arrays)
    if arrays.dtype.newbyteorder("=") not in (np.dtype(np.float32), np.dtype(np.float64)):
        arrays = arrays.astype(np.float64)
    letter = "E" if arrays.dtype.itemsize == 4 else "D"
    cell = arrays.shape[1:]
    repeat = int(np.prod(cell)) if cell else 1
    dim = "(" + ",".join(str(n) for n in cell[::-1]) + ")" if len(cell) > 1 else None
    return fits.Column(name=name, format=f"{repeat}{letter}", dim=dim, unit=unit, array=arrays)


def _provenance_hdu(prov: dict[str, Any]) -> fits.BinTableHDU:
    names = ["meta", "config", "hyperparameters", "grid"]
    values = [prov[n] for n in names]
    width = max(1, *(len(v) for v in values))
    hdu = fits.BinTableHDU.from_columns(
        [
            fits.Column(name="NAME", format="16A", array=np.array(names)),
            fits.Column(name="JSON", format=f"{width}A", array=np.array(values)),
        ],
        name="PROVENANCE",
    )
    hdu.header["COMMENT"] = "JSON documents: the DustMap meta dict, run config, hyperparameters, grid edges"
    return hdu


def _read_provenance(hdul: fits.HDUList) -> dict[str, Any]:
    if "PROVENANCE" not in hdul:
        return {}
    table = hdul["PROVENANCE"].data
    return {str(n).strip(): json.loads(str(v)) for n, v in zip(table["NAME"], table["JSON"], strict=True)}


def _primary_cards(header: fits.Header, prov: dict[str, Any]) -> None:
    header["DUSTGPV"] = (prov["dustgp_version"], "dustgp version that wrote this file")
    if prov["seed"] is not None:
        header["SEED"] = (prov["seed"], "random seed of the prediction")
    header["DATE"] = (prov["created"], "UTC time of writing")
    header["ORIGIN"] = "dustgp"
    header["REFERENC"] = REFERENCE


def _distance_bins_hdu(grid: Grid) -> fits.BinTableHDU:
    edges = grid.d_edges
    ghost = np.arange(grid.n_d) < grid.ghost_cells
    hdu = fits.BinTableHDU.from_columns(
        [
            fits.Column(name="INDEX", format="J", array=np.arange(grid.n_d)),
            fits.Column(name="D_NEAR", format="D", unit="pc", array=edges[:-1]),
            fits.Column(name="D_FAR", format="D", unit="pc", array=edges[1:]),
            fits.Column(name="D_CENTER", format="D", unit="pc", array=grid.d_centers),
            fits.Column(name="GHOST", format="L", array=ghost),
        ],
        name="DISTANCE_BINS",
    )
    hdu.header["GHOSTS"] = (grid.ghost_cells, "foreground ghost cells: rows 0 .. GHOSTS-1")
    hdu.header["COMMENT"] = "All distance cells of the map, ghost cells included; INDEX is 0-based."
    return hdu


def write_fits(dmap: DustMap, path: PathType, *, overwrite: bool = False, samples: bool = True) -> Path:
    """Write the map as FITS images with a Galactic WCS; lossless through :func:`read_fits`.

    Parameters
    ----------
    dmap : DustMap
        A map whose l and b spacing is uniform (a FITS celestial WCS needs it).
    path : str or os.PathLike
        Target file (``.fits``, ``.fits.gz`` for gzip).
    overwrite : bool
        Replace an existing file.
    samples : bool
        Include the joint posterior samples when the map has them.

    Returns
    -------
    pathlib.Path

    Notes
    -----
    Every image is stored with the longitude axis *reversed* (pixel 1 holds the largest l, ``CDELT1 < 0``) so
    that longitude increases to the left in any FITS viewer. FITS axis order is (l, b, distance[, k]), i.e.
    numpy order (k, distance, b, l). The image cubes hold only the *region* cells (``d_min .. d_max``): their
    distance axis is linear (``CTYPE3 = 'DIST'``, pc, centres of the cells) when the region spacing is
    uniform, else a ``DIST-TAB`` lookup axis (Greisen et al. 2006) into the ``DISTANCE_TAB`` table (astropy
    then needs ``WCS(header, fobj=hdulist)``). The foreground ghost cells (0 .. d_min), whose spacing differs,
    are kept in the ``FOREGROUND_CELLS`` table.
    HDUs, in order:

    ``PRIMARY``
        Density posterior mean, mag/pc. Provenance cards ``DUSTGPV``, ``SEED``, ``DATE``, ``REFERENC``.
    ``DENSITY_STD``, ``EXTINCTION_MEAN``, ``EXTINCTION_STD``
        Same shape. Extinction (mag) is integrated from the Sun to the *far* edge of each cell (foreground
        included).
    ``DENSITY_PCT``, ``EXTINCTION_PCT``
        4D, axis 4 (``PCTINDEX``) runs over the levels in header cards ``PCT1`` .. ``PCTn``.
    ``DENSITY_SAMPLES`` (optional)
        4D, axis 4 (``SAMPLE``) over the joint posterior samples, mag/pc.
    ``FOREGROUND_EXTINCTION`` (with ghost cells)
        2D image, posterior mean extinction to ``d_min``, mag.
    ``FOREGROUND_CELLS`` (with ghost cells)
        Binary table, one row per ghost cell: ``D_NEAR``, ``D_FAR`` (pc) and every array of that cell, in the
        image orientation (columns ``DENSITY_MEAN`` .. ``EXTINCTION_PCT``, ``DENSITY_SAMPLES``).
    ``COVERAGE`` (when the map knows it)
        Cube like the others, 1 where the stars constrain the cell, 0 where the map is the prior's (its ghost
        cells in the ``COVERAGE`` column of ``FOREGROUND_CELLS``).
    ``RELIABLE_DIST`` (when the map knows it)
        (2, b, l) image, pc: nearest and farthest star of each column (NaN without stars).
    ``DISTANCE_BINS``
        Binary table of all distance cells: ``INDEX``, ``D_NEAR``, ``D_FAR``, ``D_CENTER`` (pc), ``GHOST``.
    ``DISTANCE_TAB`` (non-uniform region spacing only)
        The ``-TAB`` lookup: ``COORDS`` (region cell centres, pc) and ``INDEX``.
    ``PROVENANCE``
        Binary table of JSON documents: ``meta`` (the whole meta dict), ``config``, ``hyperparameters``,
        ``grid`` (exact edges).
    """
    grid = dmap.grid
    g = grid.ghost_cells
    if grid.n_d - g < 1:
        raise ValueError("write_fits: the map has no region cells beyond the ghost cells")
    tab = _uniform_step(grid.d_edges[g:]) is None
    prov = _provenance(dmap)
    flip = np.s_[..., ::-1]  # l reversed: the largest longitude first

    def image(
        data: np.ndarray, name: str, unit: str, extra: str | None = None, primary: bool = False
    ) -> fits.ImageHDU | fits.PrimaryHDU:
        header = _cube_header(grid, extra, tab)
        header["BUNIT"] = unit
        cls = fits.PrimaryHDU if primary else fits.ImageHDU
        hdu = cls(data=np.ascontiguousarray(data[..., g:, :, :][flip]), header=header)
        if not primary:
            hdu.header["EXTNAME"] = name
        return hdu

    primary = image(dmap.density_mean, "DENSITY_MEAN", DENSITY_UNIT, primary=True)
    _primary_cards(primary.header, prov)
    primary.header["GHOSTS"] = (g, "ghost cells: in FOREGROUND_CELLS, not in cubes")
    primary.header["COMMENT"] = "Cubes hold the region cells d_min..d_max; l reversed (increases left)."
    primary.header["COMMENT"] = "Extinction cubes: from the Sun to the far edge of each cell."
    hdus: list[Any] = [primary, image(dmap.density_std, "DENSITY_STD", DENSITY_UNIT)]
    for name, attr, unit in (
        ("DENSITY_PCT", "density_percentiles", DENSITY_UNIT),
        ("EXTINCTION_MEAN", "extinction_mean", EXTINCTION_UNIT),
        ("EXTINCTION_STD", "extinction_std", EXTINCTION_UNIT),
        ("EXTINCTION_PCT", "extinction_percentiles", EXTINCTION_UNIT),
    ):
        data = getattr(dmap, attr)
        hdu = image(data, name, unit, "PCTINDEX" if data.ndim == 4 else None)
        if data.ndim == 4:
            for k, level in enumerate(dmap.percentiles, start=1):
                hdu.header[f"PCT{k}"] = (float(level), f"percentile level of plane {k}, axis 4")
        hdus.append(hdu)
    keep_samples = samples and dmap.density_samples is not None
    if keep_samples:
        hdus.append(image(dmap.density_samples, "DENSITY_SAMPLES", DENSITY_UNIT, "SAMPLE"))
    if dmap.coverage is not None:
        hdu = image(dmap.coverage.astype(np.uint8), "COVERAGE", "")
        hdu.header["COMMENT"] = "1: cell constrained by stars (no farther than the farthest star of its column);"
        hdu.header["COMMENT"] = "0: prior only (beyond the farthest star, no star in the column, off the data)."
        hdus.append(hdu)
    if dmap.reliable_distance is not None:
        reliable = fits.ImageHDU(
            data=np.ascontiguousarray(dmap.reliable_distance[flip]),
            header=celestial_wcs(grid).to_header(),
            name="RELIABLE_DIST",
        )
        reliable.header["BUNIT"] = "pc"
        reliable.header["COMMENT"] = "Plane 1: nearest star of each column, plane 2: farthest (NaN: no star)."
        hdus.append(reliable)
    if g:
        fg = fits.ImageHDU(
            data=np.ascontiguousarray(dmap.extinction_mean[g - 1][flip]),
            header=celestial_wcs(grid).to_header(),
            name="FOREGROUND_EXTINCTION",
        )
        fg.header["BUNIT"] = EXTINCTION_UNIT
        fg.header["COMMENT"] = "Posterior mean extinction from the Sun to d_min (through the ghost cells)."
        hdus.append(fg)
        columns = [
            fits.Column(name="D_NEAR", format="D", unit="pc", array=grid.d_edges[:g]),
            fits.Column(name="D_FAR", format="D", unit="pc", array=grid.d_edges[1 : g + 1]),
        ]
        for attr, _, unit in _SUMMARIES:
            data = getattr(dmap, attr)
            cells = data[:g] if data.ndim == 3 else np.moveaxis(data[:, :g], 1, 0)
            columns.append(_fits_column(attr.replace("percentiles", "pct").upper(), cells[flip], unit))
        if keep_samples:
            cells = np.moveaxis(dmap.density_samples[:, :g], 1, 0)  # type: ignore[index]
            columns.append(_fits_column("DENSITY_SAMPLES", cells[flip], DENSITY_UNIT))
        if dmap.coverage is not None:
            columns.append(_fits_column("COVERAGE", dmap.coverage[:g].astype(np.float32)[flip]))
        table = fits.BinTableHDU.from_columns(columns, name="FOREGROUND_CELLS")
        table.header["COMMENT"] = "One row per ghost cell; arrays (b, l), l reversed as in the images."
        hdus.append(table)
    hdus.append(_distance_bins_hdu(grid))
    if tab:
        region_centres = grid.d_centers[g:]
        k = region_centres.size
        hdus.append(
            fits.BinTableHDU.from_columns(
                [
                    fits.Column(
                        name="COORDS",
                        format=f"{k}D",
                        dim=f"(1,{k})",
                        unit="pc",
                        array=region_centres.reshape(1, k, 1),
                    ),
                    fits.Column(name="INDEX", format=f"{k}D", array=np.arange(1.0, k + 1).reshape(1, k)),
                ],
                name="DISTANCE_TAB",
            )
        )
    hdus.append(_provenance_hdu(prov))
    with atomic_path(path, overwrite) as tmp:
        fits.HDUList(hdus).writeto(tmp)
    return Path(path)


def read_fits(path: PathType) -> DustMap:
    """Read a map written by :func:`write_fits`, ghost cells and all.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    DustMap
        Exactly the map that was written.

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    MapFileError
        The file is damaged, of another kind, or misses a part of a dustgp map (the message names it).
    """
    with _reading(path, "FITS map"), fits.open(path, memmap=False) as hdul:
        prov = _read_provenance(hdul)
        bins = hdul["DISTANCE_BINS"]
        ghost_cells = int(bins.header["GHOSTS"])
        d_edges = np.append(_native(bins.data["D_NEAR"]), _native(bins.data["D_FAR"])[-1:])
        if "grid" in prov:
            spec = prov["grid"]
            l_edges, b_edges = np.asarray(spec["l_edges"], float), np.asarray(spec["b_edges"], float)
        else:  # a file without provenance: rebuild the sky edges from the WCS
            l_edges, b_edges = _edges_from_wcs(hdul[0].header)
        grid = _grid_from_edges(l_edges, b_edges, d_edges, ghost_cells)
        g = ghost_cells
        fg = hdul["FOREGROUND_CELLS"].data if g else None

        def cube(hdu_name: str | int, column: str) -> np.ndarray:
            region = _native(hdul[hdu_name].data)[..., ::-1]
            if not g:
                return region
            cells = _native(fg[column])[..., ::-1]  # (g, [k,] b, l)
            if region.ndim == 4:
                cells = np.moveaxis(cells, 0, 1)
            return np.concatenate([cells, region], axis=region.ndim - 3)

        arrays = {
            "density_mean": cube(0, "DENSITY_MEAN"),
            "density_std": cube("DENSITY_STD", "DENSITY_STD"),
            "density_percentiles": cube("DENSITY_PCT", "DENSITY_PCT"),
            "extinction_mean": cube("EXTINCTION_MEAN", "EXTINCTION_MEAN"),
            "extinction_std": cube("EXTINCTION_STD", "EXTINCTION_STD"),
            "extinction_percentiles": cube("EXTINCTION_PCT", "EXTINCTION_PCT"),
        }
        header = hdul["DENSITY_PCT"].header
        percentiles = np.array([header[f"PCT{k}"] for k in range(1, header["NAXIS4"] + 1)], dtype=float)
        samples = cube("DENSITY_SAMPLES", "DENSITY_SAMPLES") if "DENSITY_SAMPLES" in hdul else None
        coverage = cube("COVERAGE", "COVERAGE").astype(bool) if "COVERAGE" in hdul else None
        reliable = _native(hdul["RELIABLE_DIST"].data)[..., ::-1] if "RELIABLE_DIST" in hdul else None
        meta = prov["meta"] if "meta" in prov else _meta_from_header(hdul[0].header, prov)
    return DustMap(
        grid=grid,
        percentiles=percentiles,
        density_samples=samples,
        meta=meta,
        coverage=coverage,
        reliable_distance=None if reliable is None else np.ascontiguousarray(reliable),
        **{k: np.ascontiguousarray(v) for k, v in arrays.items()},
    )


def _meta_from_header(header: fits.Header, prov: dict[str, Any]) -> dict[str, Any]:
    meta = {k: prov[k] for k in ("config", "hyperparameters") if k in prov}
    if "SEED" in header:
        meta["seed"] = int(header["SEED"])
    return meta


def _edges_from_wcs(header: fits.Header) -> tuple[np.ndarray, np.ndarray]:
    """Longitude (unwrapped, increasing) and latitude edges of a CAR image written by :func:`write_fits`."""
    wcs = WCS(header).celestial
    n_l, n_b = header["NAXIS1"], header["NAXIS2"]
    x_edges = np.arange(n_l + 1) - 0.5  # 0-based pixel edges
    y_edges = np.arange(n_b + 1) - 0.5
    l_world, _ = wcs.pixel_to_world_values(x_edges, np.zeros_like(x_edges))
    _, b_world = wcs.pixel_to_world_values(np.zeros_like(y_edges), y_edges)
    l_world = np.asarray(l_world)[::-1]
    l_unwrapped = l_world[0] + np.cumsum(np.r_[0.0, np.diff(l_world) % 360.0])
    return l_unwrapped, np.asarray(b_world)


# ----- HEALPix ----------------------------------------------------------------------------------------------
@dataclass(eq=False)
class HealpixDustMap:
    """A map resampled onto HEALPix pixels × distance cells (what :func:`read_healpix` returns).

    Attributes
    ----------
    nside : int
    order : {"nested", "ring"}
    pixels : numpy.ndarray, shape (n_pix,)
        HEALPix indices of the stored pixels (all ``12 nside²`` for a full-sky map), increasing.
    d_edges : numpy.ndarray, shape (n_d + 1,)
        Distance-cell edges from 0, pc, ghost cells included.
    ghost_cells : int
    percentiles : numpy.ndarray, shape (n_q,)
    density_mean, density_std : numpy.ndarray, shape (n_d, n_pix)
        mag/pc.
    density_percentiles : numpy.ndarray, shape (n_q, n_d, n_pix)
    extinction_mean, extinction_std : numpy.ndarray, shape (n_d, n_pix)
        Extinction from the Sun to each cell's far edge, mag.
    extinction_percentiles : numpy.ndarray, shape (n_q, n_d, n_pix)
    meta : dict
    """

    nside: int
    order: Literal["nested", "ring"]
    pixels: np.ndarray
    d_edges: np.ndarray
    ghost_cells: int
    percentiles: np.ndarray
    density_mean: np.ndarray
    density_std: np.ndarray
    density_percentiles: np.ndarray
    extinction_mean: np.ndarray
    extinction_std: np.ndarray
    extinction_percentiles: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def npix(self) -> int:
        """Number of pixels on the whole sphere, ``12 nside²``."""
        return 12 * self.nside**2

    def full_sky(self, values: np.ndarray) -> np.ndarray:
        """Spread per-pixel ``values`` (last axis n_pix) onto the whole sphere; NaN where there is no data."""
        out = np.full((*values.shape[:-1], self.npix), np.nan, dtype=np.result_type(values, np.float32))
        out[..., self.pixels] = values
        return out


def _healpix_pixels_in_box(grid: Grid, nside: int, order: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """HEALPix pixels whose centres fall inside the grid's (l, b) box, and the grid column each falls in."""
    from astropy_healpix import HEALPix

    hp = HEALPix(nside=nside, order=order, frame=None)
    l_lo, l_hi = grid.l_edges[0], grid.l_edges[-1]
    b_lo, b_hi = grid.b_edges[0], grid.b_edges[-1]
    # candidates: a cone around the box (cheap at high nside); everything for boxes too big for a cone
    perim_l = np.concatenate(
        [np.linspace(l_lo, l_hi, 256), np.full(256, l_hi), np.linspace(l_hi, l_lo, 256), np.full(256, l_lo)]
    )
    perim_b = np.concatenate(
        [np.full(256, b_lo), np.linspace(b_lo, b_hi, 256), np.full(256, b_hi), np.linspace(b_hi, b_lo, 256)]
    )
    c_l, c_b = 0.5 * (l_lo + l_hi), 0.5 * (b_lo + b_hi)
    sep = _angular_separation(c_l, c_b, perim_l, perim_b).max()
    margin = 2.0 * np.degrees(hp.pixel_resolution.to_value(u.rad))
    if sep + margin >= 90.0:
        candidates = np.arange(hp.npix)
    else:
        candidates = np.sort(hp.cone_search_lonlat(c_l * u.deg, c_b * u.deg, (sep + margin) * u.deg))
    lon, lat = hp.healpix_to_lonlat(candidates)
    lon_deg, lat_deg = lon.to_value(u.deg), lat.to_value(u.deg)
    _, i_b, i_l = grid.locate(lon_deg, lat_deg, np.full(lon_deg.shape, grid.d_max))
    inside = i_l >= 0
    return candidates[inside], i_b[inside], i_l[inside]


def _angular_separation(l1: float, b1: float, l2: np.ndarray, b2: np.ndarray) -> np.ndarray:
    """Great-circle separation, deg (Vincenty form, stable at all separations)."""
    l1r, b1r, l2r, b2r = (np.radians(x) for x in (l1, b1, l2, b2))
    dl = l2r - l1r
    cross = np.cos(b1r) * np.sin(b2r) - np.sin(b1r) * np.cos(b2r) * np.cos(dl)
    num = np.hypot(np.cos(b2r) * np.sin(dl), cross)
    den = np.sin(b1r) * np.sin(b2r) + np.cos(b1r) * np.cos(b2r) * np.cos(dl)
    return np.degrees(np.arctan2(num, den))


def default_nside(grid: Grid) -> int:
    """The smallest power-of-two nside whose pixels are no larger than the map's (l, b) pixels.

    The map's pixel size is the square root of its median pixel solid angle; rounding nside *up* keeps every
    map pixel sampled by at least about one HEALPix pixel.
    """
    from astropy_healpix import pixel_resolution_to_nside

    size = math.sqrt(float(np.median(grid.solid_angles()))) * u.rad
    return int(pixel_resolution_to_nside(size.to(u.arcmin), round="up"))


def write_healpix(
    dmap: DustMap,
    path: PathType,
    *,
    nside: int | None = None,
    order: Literal["nested", "ring"] = "nested",
    overwrite: bool = False,
) -> Path:
    """Write the map resampled onto HEALPix pixels × distance cells (for maps covering large areas).

    Each HEALPix pixel takes the values of the map's (l, b) pixel that holds its centre (nearest-pixel
    resampling, no averaging). Only pixels whose centres fall inside the map are stored; a map covering the
    whole sky is written with implicit indexing.

    Parameters
    ----------
    dmap : DustMap
    path : str or os.PathLike
        Target ``.fits`` file.
    nside : int, optional
        HEALPix resolution, a power of 2; default :func:`default_nside` (pixels no larger than the map's).
    order : {"nested", "ring"}
        Pixel ordering.
    overwrite : bool
        Replace an existing file.

    Returns
    -------
    pathlib.Path

    Notes
    -----
    One binary table per quantity: ``DENSITY_MEAN``, ``DENSITY_STD``, ``EXTINCTION_MEAN``,
    ``EXTINCTION_STD``, and ``DENSITY_P{q}`` / ``EXTINCTION_P{q}`` per stored percentile level ``q`` (header
    card ``PCTLEVEL``). Rows are pixels; columns ``BIN000`` .. are the distance cells (ghost cells first), so
    ``healpy.read_map(path, field=j, hdu="DENSITY_MEAN")`` reads distance cell ``j`` (add ``partial=True`` for
    a partial-sky map, whose first column ``PIXEL`` holds the pixel indices: ``INDXSCHM = 'EXPLICIT'``,
    ``OBJECT = 'PARTIAL'``). Headers: ``PIXTYPE = 'HEALPIX'``, ``ORDERING``, ``NSIDE``, ``COORDSYS = 'G'``.
    ``DISTANCE_BINS`` lists the distance cells; ``PROVENANCE`` as in :func:`write_fits`. Posterior samples are
    not written.
    """
    grid = dmap.grid
    if nside is None:
        nside = default_nside(grid)
    if nside < 1 or nside & (nside - 1):
        raise ValueError(f"nside: expected a power of 2, got {nside}")
    order = order.lower()  # type: ignore[assignment]
    if order not in ("nested", "ring"):
        raise ValueError(f"order: expected 'nested' or 'ring', got {order!r}")
    if grid.n_d + 1 > 999:
        raise ValueError(f"write_healpix: a FITS table holds at most 998 distance columns, got {grid.n_d}")
    pixels, i_b, i_l = _healpix_pixels_in_box(grid, nside, order)
    if pixels.size == 0:
        raise ValueError(f"write_healpix: no HEALPix pixel centre at nside={nside} falls inside the map")
    full = pixels.size == 12 * nside**2
    log.info("HEALPix nside=%d (%s): %d pixels", nside, order, pixels.size)
    prov = _provenance(dmap)
    primary = fits.PrimaryHDU()
    _primary_cards(primary.header, prov)

    def table(name: str, cube: np.ndarray, unit: str, level: float | None = None) -> fits.BinTableHDU:
        values = cube[:, i_b, i_l]  # (n_d, n_pix)
        letter = "E" if values.dtype == np.float32 else "D"
        columns = [] if full else [fits.Column(name="PIXEL", format="K", array=pixels)]
        columns += [fits.Column(name=f"BIN{j:03d}", format=letter, unit=unit, array=values[j]) for j in range(grid.n_d)]
        hdu = fits.BinTableHDU.from_columns(columns, name=name)
        h = hdu.header
        h["PIXTYPE"] = ("HEALPIX", "HEALPix pixelisation")
        h["ORDERING"] = ("NESTED" if order == "nested" else "RING", "pixel ordering scheme")
        h["NSIDE"] = (nside, "HEALPix resolution parameter")
        h["COORDSYS"] = ("G", "Galactic coordinates")
        h["INDXSCHM"] = ("IMPLICIT" if full else "EXPLICIT", "indexing: implicit or explicit")
        h["OBJECT"] = ("FULLSKY" if full else "PARTIAL", "sky coverage")
        if full:
            h["FIRSTPIX"], h["LASTPIX"] = 0, 12 * nside**2 - 1
        h["NBINS"] = (grid.n_d, "distance cells: columns BIN000 ..")
        h["GHOSTS"] = (grid.ghost_cells, "foreground ghost cells: the first columns")
        h["BUNIT"] = unit
        if level is not None:
            h["PCTLEVEL"] = (float(level), "posterior percentile level")
        return hdu

    hdus: list[Any] = [primary]
    hdus.append(table("DENSITY_MEAN", dmap.density_mean, DENSITY_UNIT))
    hdus.append(table("DENSITY_STD", dmap.density_std, DENSITY_UNIT))
    hdus.append(table("EXTINCTION_MEAN", dmap.extinction_mean, EXTINCTION_UNIT))
    hdus.append(table("EXTINCTION_STD", dmap.extinction_std, EXTINCTION_UNIT))
    for k, level in enumerate(dmap.percentiles):
        hdus.append(table(f"DENSITY_P{level:g}", dmap.density_percentiles[k], DENSITY_UNIT, level))
    for k, level in enumerate(dmap.percentiles):
        hdus.append(table(f"EXTINCTION_P{level:g}", dmap.extinction_percentiles[k], EXTINCTION_UNIT, level))
    hdus.append(_distance_bins_hdu(grid))
    hdus.append(_provenance_hdu(prov))
    with atomic_path(path, overwrite) as tmp:
        fits.HDUList(hdus).writeto(tmp)
    return Path(path)


def read_healpix(path: PathType) -> HealpixDustMap:
    """Read a file written by :func:`write_healpix`.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    HealpixDustMap
    """
    with _reading(path, "HEALPix map"), fits.open(path, memmap=False) as hdul:
        prov = _read_provenance(hdul)
        bins = hdul["DISTANCE_BINS"]
        d_edges = np.append(_native(bins.data["D_NEAR"]), _native(bins.data["D_FAR"])[-1:])
        ghost_cells = int(bins.header["GHOSTS"])
        header = hdul["DENSITY_MEAN"].header
        nside = int(header["NSIDE"])
        nested = str(header["ORDERING"]).upper().startswith("NEST")
        order: Literal["nested", "ring"] = "nested" if nested else "ring"
        if header["INDXSCHM"].upper() == "EXPLICIT":
            pixels = _native(hdul["DENSITY_MEAN"].data["PIXEL"]).astype(np.int64)
        else:
            pixels = np.arange(12 * nside**2, dtype=np.int64)
        n_d = d_edges.size - 1

        def cube(name: str) -> np.ndarray:
            data = hdul[name].data
            return np.stack([_native(data[f"BIN{j:03d}"]) for j in range(n_d)])

        pct_hdus = [h for h in hdul if h.name.startswith("DENSITY_P") and "PCTLEVEL" in h.header]
        levels = np.array([h.header["PCTLEVEL"] for h in pct_hdus], dtype=float)
        arrays = {
            "density_mean": cube("DENSITY_MEAN"),
            "density_std": cube("DENSITY_STD"),
            "extinction_mean": cube("EXTINCTION_MEAN"),
            "extinction_std": cube("EXTINCTION_STD"),
            "density_percentiles": np.stack([cube(f"DENSITY_P{q:g}") for q in levels]),
            "extinction_percentiles": np.stack([cube(f"EXTINCTION_P{q:g}") for q in levels]),
        }
        meta = prov["meta"] if "meta" in prov else _meta_from_header(hdul[0].header, prov)
    return HealpixDustMap(
        nside=nside,
        order=order,
        pixels=pixels,
        d_edges=d_edges,
        ghost_cells=ghost_cells,
        percentiles=levels,
        meta=meta,
        **arrays,
    )


# ----- dispatch ---------------------------------------------------------------------------------------------
def _kind(path: PathType) -> Literal["netcdf", "fits"]:
    name = Path(path).name.lower()
    if name.endswith(NETCDF_SUFFIXES):
        return "netcdf"
    if name.endswith(FITS_SUFFIXES):
        return "fits"
    raise ValueError(f"{path}: unknown format; expected a name ending in {NETCDF_SUFFIXES + FITS_SUFFIXES}")


def read_map(path: PathType) -> DustMap | HealpixDustMap:
    """Read any dustgp map file, choosing the reader from the name and, for FITS, the headers.

    Parameters
    ----------
    path : str or os.PathLike
        ``.nc`` (NetCDF) or ``.fits`` / ``.fit`` / ``.fts`` (optionally ``.gz``): a FITS cube
        (:func:`read_fits`) or a HEALPix file (``PIXTYPE = 'HEALPIX'``, :func:`read_healpix`).

    Returns
    -------
    DustMap or HealpixDustMap

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
    dmap: DustMap,
    path: PathType,
    *,
    format: Literal["netcdf", "fits", "healpix"] | None = None,
    **kwargs: Any,
) -> Path:
    """Write a map in the format its name implies (``.nc``: NetCDF, ``.fits``: FITS cube) or ``format``.

    Parameters
    ----------
    dmap : DustMap
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


def read_emission(
    path: PathType, *, hdu: int | str | None = None
) -> fits.ImageHDU | fits.PrimaryHDU | fits.BinTableHDU:
    """Read a dust-emission map (HEALPix table or image with WCS) into memory, for :mod:`dustgp.emission`.

    Parameters
    ----------
    path : str or os.PathLike
        A FITS file: a HEALPix binary table (``PIXTYPE = 'HEALPIX'``, as Planck's maps) or an image with a
        celestial WCS.
    hdu : int or str, optional
        Which HDU; default the first HEALPix table, else the first HDU holding data.

    Returns
    -------
    astropy.io.fits.BinTableHDU, ImageHDU or PrimaryHDU
        An in-memory copy (the file is closed).
    """
    with fits.open(path, memmap=False) as hdul:
        if hdu is None:
            tables = [h for h in hdul if str(h.header.get("PIXTYPE", "")).upper() == "HEALPIX"]
            with_data = [h for h in hdul if h.data is not None and h.size > 0]
            if not tables and not with_data:
                raise ValueError(f"{path}: no HDU holds data")
            chosen = tables[0] if tables else with_data[0]
        else:
            chosen = hdul[hdu]
        if isinstance(chosen, fits.BinTableHDU):
            return fits.BinTableHDU(data=chosen.data.copy(), header=chosen.header.copy())
        data = np.array(chosen.data)
        if isinstance(chosen, fits.PrimaryHDU):
            return fits.PrimaryHDU(data=data, header=chosen.header.copy())
        return fits.ImageHDU(data=data, header=chosen.header.copy())


register_product("write", write_map)  # behind DustMap.save
register_product("read", read_map)  # behind DustMap.load
