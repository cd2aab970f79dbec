"""NetCDF files: lossless round trips, layout, provenance attributes, flushed atomic writes."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import numpy as np
import pytest

from dustgp._version import __version__
from dustgp.grid import Grid
from dustgp.io import MapFileError
from dustgp.io.formats import read_map
from dustgp.io.netcdf import read_netcdf, write_netcdf
from random_maps import GRIDS, META, NONUNIFORM, assert_same_map, make_map


@pytest.mark.parametrize("grid", [*GRIDS.values(), NONUNIFORM], ids=[*GRIDS, "nonuniform_d"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_netcdf_round_trip_is_exact(grid: Grid, dtype: type, tmp_path: Path) -> None:
    dmap = make_map(grid, dtype=dtype)
    write_netcdf(dmap, tmp_path / "map.nc")
    assert_same_map(dmap, read_netcdf(tmp_path / "map.nc"))


def test_netcdf_without_samples(tmp_path: Path) -> None:
    dmap = make_map(GRIDS["plain"])
    write_netcdf(dmap, tmp_path / "a.nc", samples=False)
    assert_same_map(dmap, read_netcdf(tmp_path / "a.nc"), samples=False)
    none = make_map(GRIDS["plain"], n_samples=0)
    write_netcdf(none, tmp_path / "b.nc")
    assert_same_map(none, read_netcdf(tmp_path / "b.nc"))


def test_netcdf_layout_and_provenance(tmp_path: Path) -> None:
    xr = pytest.importorskip("xarray")
    grid = GRIDS["plain"]
    write_netcdf(make_map(grid), tmp_path / "map.nc")
    with xr.open_dataset(tmp_path / "map.nc", engine="h5netcdf") as ds:
        assert ds["density_mean"].dims == ("distance", "b", "l")
        assert ds["density_percentiles"].dims == ("percentile", "distance", "b", "l")
        assert ds["density_samples"].dims == ("sample", "distance", "b", "l")
        assert ds["density_mean"].attrs["units"] == "mag / pc"
        assert ds["extinction_mean"].attrs["units"] == "mag"
        assert "long_name" in ds["extinction_percentiles"].attrs
        assert ds["distance"].attrs["units"] == "pc"
        assert ds["l"].attrs["units"] == "deg"
        np.testing.assert_array_equal(ds["distance_edges"], grid.d_edges)
        np.testing.assert_array_equal(ds["distance_bounds"][:, 0], grid.d_edges[:-1])
        np.testing.assert_array_equal(ds["is_ghost"], [1, 1] + [0] * 16)
        attrs = ds.attrs
        assert attrs["ghost_cells"] == 2
        assert attrs["dustgp_version"] == __version__
        assert json.loads(attrs["config"]) == META["config"]
        assert json.loads(attrs["hyperparameters"]) == META["hyperparameters"]
        assert attrs["seed"] == 42
        assert "A&A 658, A166" in attrs["reference"]
        created = dt.datetime.fromisoformat(attrs["created"])
        assert created.tzinfo is not None


@pytest.mark.parametrize("overwrite", [False, True])
def test_writes_are_flushed_to_disk_before_the_rename(
    overwrite: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[str] = []
    real_fsync, real_link, real_replace = os.fsync, os.link, os.replace

    def fsync(fd: int) -> None:
        events.append("fsync " + ("dir" if Path(os.readlink(f"/proc/self/fd/{fd}")).is_dir() else "file"))
        real_fsync(fd)

    def rename(real):
        def step(src, dst, *args, **kwargs):
            events.append("rename")
            return real(src, dst, *args, **kwargs)

        return step

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "link", rename(real_link))
    monkeypatch.setattr(os, "replace", rename(real_replace))
    write_netcdf(make_map(GRIDS["plain"]), tmp_path / "map.nc", overwrite=overwrite)
    assert events == ["fsync file", "rename", "fsync dir"]
    assert os.listdir(tmp_path) == ["map.nc"]


def test_netcdf_without_a_variable_names_it(tmp_path: Path) -> None:
    import xarray as xr

    write_netcdf(make_map(GRIDS["plain"]), tmp_path / "map.nc")
    with xr.open_dataset(tmp_path / "map.nc", engine="h5netcdf") as ds:
        ds.drop_vars(["l_edges", "density_std"]).to_netcdf(tmp_path / "cut.nc", engine="h5netcdf")
    with pytest.raises(MapFileError, match=r"cut.nc: not a dustgp map: variables 'l_edges', 'density_std' missing"):
        read_map(tmp_path / "cut.nc")
