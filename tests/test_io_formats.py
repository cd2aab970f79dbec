"""Any map file: the format chosen from the name, no overwrite unless asked, paths checked, damaged files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dustgp.io import MapFileError
from dustgp.io.fits_cube import write_fits
from dustgp.io.formats import check_output_path, read_map, write_map
from dustgp.io.healpix import HealpixPosteriorMap, write_healpix
from dustgp.io.netcdf import write_netcdf
from dustgp.posterior_map import PosteriorMap
from random_maps import GRIDS, assert_same_map, make_map


def test_read_and_write_map_dispatch(tmp_path: Path) -> None:
    dmap = make_map(GRIDS["plain"])
    write_map(dmap, tmp_path / "a.nc")
    write_map(dmap, tmp_path / "a.fits")
    write_map(dmap, tmp_path / "hp.fits", format="healpix", nside=16)
    assert_same_map(dmap, read_map(tmp_path / "a.nc"))
    assert_same_map(dmap, read_map(tmp_path / "a.fits"))
    assert isinstance(read_map(tmp_path / "hp.fits"), HealpixPosteriorMap)
    with pytest.raises(ValueError, match="unknown format"):
        write_map(dmap, tmp_path / "a.txt")
    dmap.save(tmp_path / "b.nc")
    assert_same_map(dmap, PosteriorMap.load(tmp_path / "b.nc"))
    with pytest.raises(TypeError, match="HealpixPosteriorMap"):
        PosteriorMap.load(tmp_path / "hp.fits")


@pytest.mark.parametrize("writer", [write_netcdf, write_fits, write_healpix])
def test_no_overwrite_unless_asked(writer, tmp_path: Path) -> None:
    target = tmp_path / ("map.nc" if writer is write_netcdf else "map.fits")
    target.write_bytes(b"precious")
    dmap = make_map(GRIDS["plain"])
    with pytest.raises(FileExistsError, match="overwrite=True"):
        writer(dmap, target)
    assert target.read_bytes() == b"precious"
    writer(dmap, target, overwrite=True)
    assert target.read_bytes() != b"precious"
    assert sorted(os.listdir(tmp_path)) == [target.name]  # no temporary file left behind


def test_output_paths_are_checked_before_computing(tmp_path: Path) -> None:
    assert check_output_path(tmp_path / "map.nc", overwrite=False) == tmp_path / "map.nc"
    (tmp_path / "old.fits").write_bytes(b"precious")
    with pytest.raises(FileExistsError, match=r"old.fits exists; pass --overwrite"):
        check_output_path(tmp_path / "old.fits", overwrite=False)
    assert check_output_path(tmp_path / "old.fits", overwrite=True).name == "old.fits"
    with pytest.raises(ValueError, match="unknown format"):
        check_output_path(tmp_path / "map.png", overwrite=False)
    with pytest.raises(ValueError, match=r"format: expected one of .*, got 'png'"):
        check_output_path(tmp_path / "map.fits", overwrite=False, format="png")  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError, match="no such directory"):
        check_output_path(tmp_path / "missing" / "map.nc", overwrite=False)
    with pytest.raises(IsADirectoryError, match="is a folder"):
        check_output_path(tmp_path, overwrite=True, format="netcdf")
    assert (tmp_path / "old.fits").read_bytes() == b"precious"


# astropy says a truncated FITS file "may have been truncated" before failing on it: expected here
@pytest.mark.filterwarnings("ignore::astropy.utils.exceptions.AstropyUserWarning")
@pytest.mark.parametrize("name", ["map.nc", "map.fits", "hp.fits"])
@pytest.mark.parametrize("damage", ["empty", "random", "truncated"])
def test_damaged_map_files_give_one_clear_error(name: str, damage: str, tmp_path: Path) -> None:
    path = tmp_path / name
    dmap = make_map(GRIDS["plain"])
    write_map(dmap, path, **({"format": "healpix", "nside": 16} if name == "hp.fits" else {}))
    data = path.read_bytes()
    path.write_bytes({"empty": b"", "random": os.urandom(4096), "truncated": data[: len(data) // 2]}[damage])
    with pytest.raises(MapFileError, match=rf"{name}: (cannot be read as a dustgp|not a dustgp)"):
        read_map(path)
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_map(tmp_path / "absent.nc")
