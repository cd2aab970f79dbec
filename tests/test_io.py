"""NetCDF, FITS-cube and HEALPix products: lossless round trips, WCS, provenance, safe writes."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import astropy.units as u
import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from dustgp import io
from dustgp.dustmap import DustMap
from dustgp.grid import Grid

LEVELS = (2.5, 16.0, 50.0, 84.0, 97.5)
META = {
    "config": {"grid": {"l": [50, 90, 8]}, "inducing_points": 1000, "name": "Orion ✓"},
    "seed": 42,
    "hyperparameters": {"gamma": [20.0, 20.0, 10.0], "alpha": 0.7, "c": -3.1},
    "samples": 200,
}


def make_map(grid: Grid, *, n_samples: int = 3, seed: int = 0, dtype: type = np.float64) -> DustMap:
    """A map with random positive fields (every value distinct, so any misplaced value shows)."""
    rng = np.random.default_rng(seed)
    rho = rng.lognormal(-7, 1, grid.shape)
    ext = np.cumsum(rho * grid.path_lengths[:, None, None], axis=0)
    pct = np.sort(rng.lognormal(0, 0.2, (len(LEVELS), *grid.shape)), axis=0)
    samples = (rho * rng.lognormal(0, 0.3, (n_samples, *grid.shape))).astype(dtype) if n_samples else None
    return DustMap(
        grid=grid,
        percentiles=np.array(LEVELS),
        density_mean=rho.astype(dtype),
        density_std=(0.3 * rho).astype(dtype),
        density_percentiles=(pct * rho).astype(dtype),
        extinction_mean=ext.astype(dtype),
        extinction_std=(0.2 * ext).astype(dtype),
        extinction_percentiles=(pct * ext).astype(dtype),
        density_samples=samples,
        meta=META,
    )


GRIDS = {
    "plain": Grid(l=(50, 90, 8), b=(-10, 10, 6), d=(180, 500, 16), ghost_cells=2),
    "crossing_l0": Grid(l=(350, 10, 10), b=(-5, 5, 4), d=(100, 300, 5), ghost_cells=1),
    "no_ghosts": Grid(l=(120.5, 130.5, 5), b=(20, 30, 5), d=(50, 150, 4), ghost_cells=0),
    "all_longitudes": Grid(l=(0, 360, 24), b=(-30, 30, 4), d=(100, 300, 3), ghost_cells=1),
}
NONUNIFORM = Grid(l=(200, 230, 6), b=(-30, -20, 5), d=[100, 120, 150, 200, 300, 450], ghost_cells=3)
FIELDS = (
    "density_mean",
    "density_std",
    "density_percentiles",
    "extinction_mean",
    "extinction_std",
    "extinction_percentiles",
    "density_samples",
    "percentiles",
)


def assert_same_map(a: DustMap, b: DustMap, *, samples: bool = True) -> None:
    assert a.grid == b.grid
    for name in ("l_edges", "b_edges", "d_edges"):
        np.testing.assert_array_equal(getattr(a.grid, name), getattr(b.grid, name))
    assert a.grid.ghost_cells == b.grid.ghost_cells
    for name in FIELDS:
        x, y = getattr(a, name), getattr(b, name)
        if name == "density_samples" and not samples:
            assert y is None
            continue
        if x is None:
            assert y is None
            continue
        assert y.dtype == x.dtype, name
        np.testing.assert_array_equal(y, x, err_msg=name)
    assert b.meta == a.meta


# ----- NetCDF -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("grid", [*GRIDS.values(), NONUNIFORM], ids=[*GRIDS, "nonuniform_d"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_netcdf_round_trip_is_exact(grid: Grid, dtype: type, tmp_path: Path) -> None:
    dmap = make_map(grid, dtype=dtype)
    io.write_netcdf(dmap, tmp_path / "map.nc")
    assert_same_map(dmap, io.read_netcdf(tmp_path / "map.nc"))


@pytest.mark.parametrize("writer", ["netcdf", "fits"])
def test_empty_meta_round_trips(writer: str, tmp_path: Path) -> None:
    dmap = make_map(GRIDS["plain"])
    dmap.meta = {}
    path = tmp_path / ("m.nc" if writer == "netcdf" else "m.fits")
    io.write_map(dmap, path)
    assert io.read_map(path).meta == {}


def test_netcdf_without_samples(tmp_path: Path) -> None:
    dmap = make_map(GRIDS["plain"])
    io.write_netcdf(dmap, tmp_path / "a.nc", samples=False)
    assert_same_map(dmap, io.read_netcdf(tmp_path / "a.nc"), samples=False)
    none = make_map(GRIDS["plain"], n_samples=0)
    io.write_netcdf(none, tmp_path / "b.nc")
    assert_same_map(none, io.read_netcdf(tmp_path / "b.nc"))


def test_netcdf_layout_and_provenance(tmp_path: Path) -> None:
    xr = pytest.importorskip("xarray")
    grid = GRIDS["plain"]
    io.write_netcdf(make_map(grid), tmp_path / "map.nc")
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
        assert attrs["dustgp_version"] == io._package_version()
        assert json.loads(attrs["config"]) == META["config"]
        assert json.loads(attrs["hyperparameters"]) == META["hyperparameters"]
        assert attrs["seed"] == 42
        assert "A&A 658, A166" in attrs["reference"]
        created = dt.datetime.fromisoformat(attrs["created"])
        assert created.tzinfo is not None


# ----- FITS cube --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("grid", [*GRIDS.values(), NONUNIFORM], ids=[*GRIDS, "nonuniform_d"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_fits_round_trip_is_exact(grid: Grid, dtype: type, tmp_path: Path) -> None:
    dmap = make_map(grid, dtype=dtype)
    io.write_fits(dmap, tmp_path / "map.fits")
    assert_same_map(dmap, io.read_fits(tmp_path / "map.fits"))


def test_fits_gzip_and_no_samples(tmp_path: Path) -> None:
    dmap = make_map(GRIDS["plain"])
    io.write_fits(dmap, tmp_path / "map.fits.gz", samples=False)
    with open(tmp_path / "map.fits.gz", "rb") as f:
        assert f.read(2) == b"\x1f\x8b"  # gzip magic
    assert_same_map(dmap, io.read_fits(tmp_path / "map.fits.gz"), samples=False)


@pytest.mark.parametrize("grid", list(GRIDS.values()), ids=list(GRIDS))
def test_fits_wcs_gives_the_grid_centres(grid: Grid, tmp_path: Path) -> None:
    io.write_fits(make_map(grid), tmp_path / "map.fits")
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
        assert header["DUSTGPV"] == io._package_version()
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
    io.write_fits(dmap, tmp_path / "map.fits")
    with fits.open(tmp_path / "map.fits") as hdul:
        fg = hdul["FOREGROUND_EXTINCTION"]
        np.testing.assert_array_equal(fg.data[:, ::-1], dmap.extinction_mean[grid.ghost_cells - 1])
        assert fg.header["CTYPE1"] == "GLON-CAR"
        assert fg.header["BUNIT"] == "mag"


def test_fits_nonuniform_distance_uses_a_tab_axis(tmp_path: Path) -> None:
    grid = NONUNIFORM
    io.write_fits(make_map(grid), tmp_path / "map.fits")
    with fits.open(tmp_path / "map.fits") as hdul:
        assert hdul[0].header["CTYPE3"] == "DIST-TAB"
        wcs = WCS(hdul[0].header, fobj=hdul)
        n_reg = grid.n_d - grid.ghost_cells
        _, _, d = wcs.pixel_to_world_values(np.zeros(n_reg), np.zeros(n_reg), np.arange(n_reg))
        np.testing.assert_allclose(d, grid.d_centers[grid.ghost_cells :], rtol=1e-12)


def test_celestial_wcs_is_referenced_to_the_middle_of_the_map() -> None:
    # A CAR projection wraps 180° from its reference longitude; referenced to an edge, a map wider than 180°
    # would cross that seam (and WCSAxes would label only part of it).
    wcs = io.celestial_wcs(GRIDS["all_longitudes"])
    assert wcs.wcs.crval[0] == pytest.approx(180.0)
    x_edges = np.arange(GRIDS["all_longitudes"].n_l + 1) - 0.5
    offsets = x_edges - (wcs.wcs.crpix[0] - 1)
    assert np.all(np.abs(offsets * wcs.wcs.cdelt[0]) <= 180.0 + 1e-9)


def test_celestial_wcs_needs_uniform_sky_spacing() -> None:
    grid = Grid(l=[10, 11, 13], b=(0, 1, 2), d=(10, 20, 2))
    with pytest.raises(ValueError, match="uniform"):
        io.celestial_wcs(grid)


# ----- HEALPix ----------------------------------------------------------------------------------------------
def expected_healpix(dmap: DustMap, nside: int, order: str) -> tuple[np.ndarray, np.ndarray]:
    """Pixels whose centres fall in the map, and the density mean of the map pixel holding each centre."""
    from astropy_healpix import healpix_to_lonlat

    pix = np.arange(12 * nside**2)
    lon, lat = healpix_to_lonlat(pix, nside, order=order)
    _, i_b, i_l = dmap.grid.locate(lon.deg, lat.deg, np.full(pix.size, dmap.grid.d_max))
    inside = i_l >= 0
    return pix[inside], dmap.density_mean[:, i_b[inside], i_l[inside]]


@pytest.mark.parametrize("order", ["nested", "ring"])
@pytest.mark.parametrize("grid", [GRIDS["plain"], GRIDS["crossing_l0"]], ids=["plain", "crossing_l0"])
def test_healpix_round_trip(grid: Grid, order: str, tmp_path: Path) -> None:
    dmap = make_map(grid)
    nside = 32
    io.write_healpix(dmap, tmp_path / "hp.fits", nside=nside, order=order)
    hmap = io.read_healpix(tmp_path / "hp.fits")
    pixels, values = expected_healpix(dmap, nside, order)
    assert (hmap.nside, hmap.order, hmap.ghost_cells) == (nside, order, grid.ghost_cells)
    np.testing.assert_array_equal(hmap.pixels, pixels)
    np.testing.assert_array_equal(hmap.density_mean, values)
    np.testing.assert_array_equal(hmap.d_edges, grid.d_edges)
    np.testing.assert_array_equal(hmap.percentiles, dmap.percentiles)
    assert hmap.extinction_percentiles.shape == (5, grid.n_d, pixels.size)
    assert hmap.meta == META
    full = hmap.full_sky(hmap.density_mean)
    assert full.shape == (grid.n_d, 12 * nside**2)
    assert np.isnan(full).sum() == grid.n_d * (12 * nside**2 - pixels.size)
    with fits.open(tmp_path / "hp.fits") as hdul:
        h = hdul["DENSITY_MEAN"].header
        assert (h["PIXTYPE"], h["NSIDE"], h["COORDSYS"], h["INDXSCHM"]) == ("HEALPIX", nside, "G", "EXPLICIT")
        # the HEALPix FITS convention spells the schemes in capitals (Górski et al. 2005, FITS keyword ORDERING)
        assert h["ORDERING"] == {"nested": "NESTED", "ring": "RING"}[order]
        assert hdul[0].header["DUSTGPV"] == io._package_version()


def test_healpix_is_readable_by_healpy(tmp_path: Path) -> None:
    healpy = pytest.importorskip("healpy")
    dmap = make_map(GRIDS["plain"])
    io.write_healpix(dmap, tmp_path / "hp.fits", nside=32, order="ring")
    pixels, values = expected_healpix(dmap, 32, "ring")
    j = 5
    m = healpy.read_map(tmp_path / "hp.fits", field=j, hdu="DENSITY_MEAN", partial=True, nest=False)
    np.testing.assert_allclose(m[pixels], values[j], rtol=1e-7)  # healpy reads as float32 by default


def test_healpix_full_sky_is_implicit(tmp_path: Path) -> None:
    grid = Grid(l=(0, 360, 36), b=(-90, 90, 18), d=(100, 200, 2), ghost_cells=1)
    dmap = make_map(grid, n_samples=0)
    io.write_healpix(dmap, tmp_path / "sky.fits", nside=8, order="ring")
    hmap = io.read_healpix(tmp_path / "sky.fits")
    assert hmap.pixels.size == 12 * 64
    _, values = expected_healpix(dmap, 8, "ring")
    np.testing.assert_array_equal(hmap.density_mean, values)
    with fits.open(tmp_path / "sky.fits") as hdul:
        assert hdul["DENSITY_MEAN"].header["INDXSCHM"] == "IMPLICIT"
        assert "PIXEL" not in hdul["DENSITY_MEAN"].columns.names


def test_default_nside_matches_the_pixel_size() -> None:
    from astropy_healpix import nside_to_pixel_resolution

    grid = GRIDS["plain"]  # 5 x 3.33 deg pixels
    nside = io.default_nside(grid)
    size = np.sqrt(np.median(grid.solid_angles())) * u.rad
    assert nside_to_pixel_resolution(nside) <= size < 2 * nside_to_pixel_resolution(nside)


# ----- dispatch and safe writes -----------------------------------------------------------------------------
def test_read_and_write_map_dispatch(tmp_path: Path) -> None:
    dmap = make_map(GRIDS["plain"])
    io.write_map(dmap, tmp_path / "a.nc")
    io.write_map(dmap, tmp_path / "a.fits")
    io.write_map(dmap, tmp_path / "hp.fits", format="healpix", nside=16)
    assert_same_map(dmap, io.read_map(tmp_path / "a.nc"))
    assert_same_map(dmap, io.read_map(tmp_path / "a.fits"))
    assert isinstance(io.read_map(tmp_path / "hp.fits"), io.HealpixDustMap)
    with pytest.raises(ValueError, match="unknown format"):
        io.write_map(dmap, tmp_path / "a.txt")
    dmap.save(tmp_path / "b.nc")
    assert_same_map(dmap, DustMap.load(tmp_path / "b.nc"))
    with pytest.raises(TypeError, match="HealpixDustMap"):
        DustMap.load(tmp_path / "hp.fits")


@pytest.mark.parametrize("writer", [io.write_netcdf, io.write_fits, io.write_healpix])
def test_no_overwrite_unless_asked(writer, tmp_path: Path) -> None:
    target = tmp_path / ("map.nc" if writer is io.write_netcdf else "map.fits")
    target.write_bytes(b"precious")
    dmap = make_map(GRIDS["plain"])
    with pytest.raises(FileExistsError, match="overwrite=True"):
        writer(dmap, target)
    assert target.read_bytes() == b"precious"
    writer(dmap, target, overwrite=True)
    assert target.read_bytes() != b"precious"
    assert sorted(os.listdir(tmp_path)) == [target.name]  # no temporary file left behind


def test_a_failed_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(self, path, *args, **kwargs):
        Path(path).write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(fits.HDUList, "writeto", fail)
    with pytest.raises(OSError, match="disk full"):
        io.write_fits(make_map(GRIDS["plain"]), tmp_path / "map.fits")
    assert os.listdir(tmp_path) == []


def test_an_interrupted_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(self, path, *args, **kwargs):
        Path(path).write_bytes(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(fits.HDUList, "writeto", interrupted)
    with pytest.raises(KeyboardInterrupt):
        io.write_fits(make_map(GRIDS["plain"]), tmp_path / "map.fits")
    assert os.listdir(tmp_path) == []


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
    io.write_netcdf(make_map(GRIDS["plain"]), tmp_path / "map.nc", overwrite=overwrite)
    assert events == ["fsync file", "rename", "fsync dir"]
    assert os.listdir(tmp_path) == ["map.nc"]


def test_output_paths_are_checked_before_computing(tmp_path: Path) -> None:
    assert io.check_output_path(tmp_path / "map.nc", overwrite=False) == tmp_path / "map.nc"
    (tmp_path / "old.fits").write_bytes(b"precious")
    with pytest.raises(FileExistsError, match=r"old.fits exists; pass --overwrite"):
        io.check_output_path(tmp_path / "old.fits", overwrite=False)
    assert io.check_output_path(tmp_path / "old.fits", overwrite=True).name == "old.fits"
    with pytest.raises(ValueError, match="unknown format"):
        io.check_output_path(tmp_path / "map.png", overwrite=False)
    with pytest.raises(ValueError, match=r"format: expected one of .*, got 'png'"):
        io.check_output_path(tmp_path / "map.fits", overwrite=False, format="png")  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError, match="no such directory"):
        io.check_output_path(tmp_path / "missing" / "map.nc", overwrite=False)
    with pytest.raises(IsADirectoryError, match="is a folder"):
        io.check_output_path(tmp_path, overwrite=True, format="netcdf")
    assert (tmp_path / "old.fits").read_bytes() == b"precious"


@pytest.mark.parametrize("name", ["map.nc", "map.fits", "hp.fits"])
@pytest.mark.parametrize("damage", ["empty", "random", "truncated"])
def test_damaged_map_files_give_one_clear_error(name: str, damage: str, tmp_path: Path) -> None:
    path = tmp_path / name
    dmap = make_map(GRIDS["plain"])
    io.write_map(dmap, path, **({"format": "healpix", "nside": 16} if name == "hp.fits" else {}))
    data = path.read_bytes()
    path.write_bytes({"empty": b"", "random": os.urandom(4096), "truncated": data[: len(data) // 2]}[damage])
    with pytest.raises(io.MapFileError, match=rf"{name}: (cannot be read as a dustgp|not a dustgp)"):
        io.read_map(path)
    with pytest.raises(FileNotFoundError, match="no such file"):
        io.read_map(tmp_path / "absent.nc")


def test_netcdf_without_a_variable_names_it(tmp_path: Path) -> None:
    import xarray as xr

    io.write_netcdf(make_map(GRIDS["plain"]), tmp_path / "map.nc")
    with xr.open_dataset(tmp_path / "map.nc", engine="h5netcdf") as ds:
        ds.drop_vars(["l_edges", "density_std"]).to_netcdf(tmp_path / "cut.nc", engine="h5netcdf")
    with pytest.raises(io.MapFileError, match=r"cut.nc: not a dustgp map: variables 'l_edges', 'density_std' missing"):
        io.read_map(tmp_path / "cut.nc")


def test_fits_without_an_hdu_names_it(tmp_path: Path) -> None:
    io.write_fits(make_map(GRIDS["plain"]), tmp_path / "map.fits")
    with fits.open(tmp_path / "map.fits") as hdul:
        fits.HDUList([h for h in hdul if h.name != "DISTANCE_BINS"]).writeto(tmp_path / "cut.fits")
    with pytest.raises(io.MapFileError, match=r"cut.fits: not a dustgp FITS map: Extension 'DISTANCE_BINS' not found"):
        io.read_map(tmp_path / "cut.fits")


def test_read_emission(tmp_path: Path) -> None:
    header = io.celestial_wcs(GRIDS["plain"]).to_header()
    image = fits.PrimaryHDU(np.arange(12.0).reshape(3, 4), header=header)
    image.writeto(tmp_path / "img.fits")
    hdu = io.read_emission(tmp_path / "img.fits")
    np.testing.assert_array_equal(hdu.data, image.data)
    table = fits.BinTableHDU.from_columns([fits.Column(name="I", format="E", array=np.ones(12))])
    table.header["PIXTYPE"], table.header["ORDERING"], table.header["NSIDE"] = "HEALPIX", "RING", 1
    fits.HDUList([fits.PrimaryHDU(), table]).writeto(tmp_path / "hp.fits")
    hp = io.read_emission(tmp_path / "hp.fits")
    assert isinstance(hp, fits.BinTableHDU)
    assert hp.header["NSIDE"] == 1
