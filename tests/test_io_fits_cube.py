"""FITS cubes: lossless round trips, the Galactic WCS, ghost cells, -TAB distance axes, safe writes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from dustgp._version import __version__
from dustgp.grid import Grid
from dustgp.io import MapFileError
from dustgp.io.fits_cube import celestial_wcs, read_fits, write_fits
from dustgp.io.formats import read_map
from random_maps import GRIDS, META, NONUNIFORM, assert_same_map, make_map


@pytest.mark.parametrize("grid", [*GRIDS.values(), NONUNIFORM], ids=[*GRIDS, "nonuniform_d"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_fits_round_trip_is_exact(grid: Grid, dtype: type, tmp_path: Path) -> None:
    dmap = make_map(grid, dtype=dtype)
    write_fits(dmap, tmp_path / "map.fits")
    assert_same_map(dmap, read_fits(tmp_path / "map.fits"))


def test_fits_gzip_and_no_samples(tmp_path: Path) -> None:
    dmap = make_map(GRIDS["plain"])
    write_fits(dmap, tmp_path / "map.fits.gz", samples=False)
    with open(tmp_path / "map.fits.gz", "rb") as f:
        assert f.read(2) == b"\x1f\x8b"  # gzip magic
    assert_same_map(dmap, read_fits(tmp_path / "map.fits.gz"), samples=False)


@pytest.mark.parametrize("grid", list(GRIDS.values()), ids=list(GRIDS))
def test_fits_wcs_gives_the_grid_centres(grid: Grid, tmp_path: Path) -> None:
    write_fits(make_map(grid), tmp_path / "map.fits")
    with fits.open(tmp_path / "map.fits") as hdul:
        header = hdul[0].header
        assert (header["CTYPE1"], header["CTYPE2"], header["CTYPE3"]) == ("GLON-CAR", "GLAT-CAR", "DIST")
        assert header["CDELT1"] < 0
        assert 0 <= header["CRVAL1"] < 360
        assert header["CUNIT3"] == "pc"
        assert header["BUNIT"] == "mag / pc"
        assert hdul["EXTINCTION_MEAN"].header["BUNIT"] == "mag"
        g = grid.ghost_cells
        n_reg = grid.n_d - g
        assert hdul[0].data.shape == (n_reg, grid.n_b, grid.n_l)
        wcs = WCS(header)
        x, y, z = np.meshgrid(np.arange(grid.n_l), np.arange(grid.n_b), np.arange(n_reg), indexing="ij")
        l, b, d = wcs.pixel_to_world_values(x, y, z)
        # pixel x holds longitude cell n_l - 1 - x: l decreases with the pixel index
        expected_l = grid.l_centers[::-1][x]
        dl = (l - expected_l + 180.0) % 360.0 - 180.0  # compare on the circle (wcs returns [0, 360))
        np.testing.assert_allclose(dl, 0.0, atol=1e-9)
        np.testing.assert_allclose(b, grid.b_centers[y], rtol=0, atol=1e-9)
        np.testing.assert_allclose(d, grid.d_centers[g:][z], rtol=1e-12)
        assert np.all(np.diff(grid.unwrap_l(l[:, 0, 0])) < 0)
        # provenance
        assert header["DUSTGPV"] == __version__
        assert header["SEED"] == 42
        assert "A166" in header["REFERENC"]
        prov = {
            str(n).strip(): str(v)
            for n, v in zip(hdul["PROVENANCE"].data["NAME"], hdul["PROVENANCE"].data["JSON"], strict=True)
        }
        assert json.loads(prov["config"]) == META["config"]
        assert json.loads(prov["hyperparameters"]) == META["hyperparameters"]
        bins = hdul["DISTANCE_BINS"].data
        np.testing.assert_array_equal(bins["D_NEAR"], grid.d_edges[:-1])
        np.testing.assert_array_equal(bins["GHOST"], np.arange(grid.n_d) < g)
        assert hdul["DENSITY_PCT"].header["PCT2"] == 16.0


def test_fits_foreground_image(tmp_path: Path) -> None:
    grid = GRIDS["plain"]
    dmap = make_map(grid)
    write_fits(dmap, tmp_path / "map.fits")
    with fits.open(tmp_path / "map.fits") as hdul:
        fg = hdul["FOREGROUND_EXTINCTION"]
        np.testing.assert_array_equal(fg.data[:, ::-1], dmap.extinction_mean[grid.ghost_cells - 1])
        assert fg.header["CTYPE1"] == "GLON-CAR"
        assert fg.header["BUNIT"] == "mag"


def test_fits_nonuniform_distance_uses_a_tab_axis(tmp_path: Path) -> None:
    grid = NONUNIFORM
    write_fits(make_map(grid), tmp_path / "map.fits")
    with fits.open(tmp_path / "map.fits") as hdul:
        assert hdul[0].header["CTYPE3"] == "DIST-TAB"
        wcs = WCS(hdul[0].header, fobj=hdul)
        n_reg = grid.n_d - grid.ghost_cells
        _, _, d = wcs.pixel_to_world_values(np.zeros(n_reg), np.zeros(n_reg), np.arange(n_reg))
        np.testing.assert_allclose(d, grid.d_centers[grid.ghost_cells :], rtol=1e-12)


def test_celestial_wcs_is_referenced_to_the_middle_of_the_map() -> None:
    # A CAR projection wraps 180° from its reference longitude; referenced to an edge, a map wider than 180°
    # would cross that seam (and WCSAxes would label only part of it).
    wcs = celestial_wcs(GRIDS["all_longitudes"])
    assert wcs.wcs.crval[0] == pytest.approx(180.0)
    x_edges = np.arange(GRIDS["all_longitudes"].n_l + 1) - 0.5
    offsets = x_edges - (wcs.wcs.crpix[0] - 1)
    assert np.all(np.abs(offsets * wcs.wcs.cdelt[0]) <= 180.0 + 1e-9)


def test_celestial_wcs_needs_uniform_sky_spacing() -> None:
    grid = Grid(l=[10, 11, 13], b=(0, 1, 2), d=(10, 20, 2))
    with pytest.raises(ValueError, match="uniform"):
        celestial_wcs(grid)


def test_a_failed_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(self, path, *args, **kwargs):
        Path(path).write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(fits.HDUList, "writeto", fail)
    with pytest.raises(OSError, match="disk full"):
        write_fits(make_map(GRIDS["plain"]), tmp_path / "map.fits")
    assert os.listdir(tmp_path) == []


def test_an_interrupted_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(self, path, *args, **kwargs):
        Path(path).write_bytes(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(fits.HDUList, "writeto", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_fits(make_map(GRIDS["plain"]), tmp_path / "map.fits")
    assert os.listdir(tmp_path) == []


def test_fits_without_an_hdu_names_it(tmp_path: Path) -> None:
    write_fits(make_map(GRIDS["plain"]), tmp_path / "map.fits")
    with fits.open(tmp_path / "map.fits") as hdul:
        fits.HDUList([h for h in hdul if h.name != "DISTANCE_BINS"]).writeto(tmp_path / "cut.fits")
    with pytest.raises(MapFileError, match=r"cut.fits: not a dustgp FITS map: Extension 'DISTANCE_BINS' not found"):
        read_map(tmp_path / "cut.fits")
