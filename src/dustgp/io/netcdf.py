"""NetCDF-4 files of a :class:`~dustgp.posterior_map.PosteriorMap`: the complete map, lossless.

Dimensions ``distance``, ``b``, ``l``, ``percentile``, ``sample``; cell centres as coordinates with ``units``; cell
edges (``distance_edges``, ``l_edges``, ``b_edges``) and CF-style ``*_bounds``; ghost cells included and flagged
(``is_ghost``, attribute ``ghost_cells``). Written with xarray (engine ``h5netcdf``), which is imported only when a
NetCDF file is written or read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .._atomic import atomic_path
from ..posterior_map import DENSITY_UNIT, SUMMARIES, PosteriorMap
from ._common import MapFileError, PathType, _grid_from_edges, _reading
from .provenance import _meta_from_attrs, _provenance

__all__ = ["read_netcdf", "write_netcdf"]

_SAMPLES_LONG_NAME = "joint posterior samples of the extinction density"


def write_netcdf(
    dmap: PosteriorMap, path: PathType, *, overwrite: bool = False, samples: bool = True, compress: bool = True
) -> Path:
    """Write the complete map to NetCDF-4 (HDF5, engine ``h5netcdf``); lossless.

    Parameters
    ----------
    dmap : PosteriorMap
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
    for name, long_name, unit in SUMMARIES:
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


def read_netcdf(path: PathType) -> PosteriorMap:
    """Read a map written by :func:`write_netcdf`.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    PosteriorMap
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
        required = ["l_edges", "b_edges", "distance_edges", "percentile", *(summary.name for summary in SUMMARIES)]
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
        arrays = {summary.name: ds[summary.name].values for summary in SUMMARIES}
        samples = ds["density_samples"].values if "density_samples" in ds else None
        coverage = ds["coverage"].values.astype(bool) if "coverage" in ds else None
        reliable = None
        if "reliable_distance_min" in ds and "reliable_distance_max" in ds:
            reliable = np.stack([ds["reliable_distance_min"].values, ds["reliable_distance_max"].values])
        meta = _meta_from_attrs(ds.attrs)
        percentiles = ds["percentile"].values
    return PosteriorMap(
        grid=grid,
        percentiles=percentiles,
        density_samples=samples,
        meta=meta,
        coverage=coverage,
        reliable_distance=reliable,
        **arrays,
    )
