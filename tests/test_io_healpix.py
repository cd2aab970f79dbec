"""HEALPix × distance files: round trips, healpy compatibility, full-sky indexing, the default nside."""

from __future__ import annotations

from pathlib import Path

import astropy.units as u
import numpy as np
import pytest
from astropy.io import fits

from dustgp._version import __version__
from dustgp.grid import Grid
from dustgp.io.healpix import default_nside, read_healpix, write_healpix
from dustgp.posterior_map import PosteriorMap
from random_maps import GRIDS, META, make_map


def expected_healpix(dmap: PosteriorMap, nside: int, order: str) -> tuple[np.ndarray, np.ndarray]:
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
    write_healpix(dmap, tmp_path / "hp.fits", nside=nside, order=order)
    hmap = read_healpix(tmp_path / "hp.fits")
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
        assert hdul[0].header["DUSTGPV"] == __version__


def test_healpix_is_readable_by_healpy(tmp_path: Path) -> None:
    healpy = pytest.importorskip("healpy")
    dmap = make_map(GRIDS["plain"])
    write_healpix(dmap, tmp_path / "hp.fits", nside=32, order="ring")
    pixels, values = expected_healpix(dmap, 32, "ring")
    j = 5
    m = healpy.read_map(tmp_path / "hp.fits", field=j, hdu="DENSITY_MEAN", partial=True, nest=False)
    np.testing.assert_allclose(m[pixels], values[j], rtol=1e-7)  # healpy reads as float32 by default


def test_healpix_full_sky_is_implicit(tmp_path: Path) -> None:
    grid = Grid(l=(0, 360, 36), b=(-90, 90, 18), d=(100, 200, 2), ghost_cells=1)
    dmap = make_map(grid, n_samples=0)
    write_healpix(dmap, tmp_path / "sky.fits", nside=8, order="ring")
    hmap = read_healpix(tmp_path / "sky.fits")
    assert hmap.pixels.size == 12 * 64
    _, values = expected_healpix(dmap, 8, "ring")
    np.testing.assert_array_equal(hmap.density_mean, values)
    with fits.open(tmp_path / "sky.fits") as hdul:
        assert hdul["DENSITY_MEAN"].header["INDXSCHM"] == "IMPLICIT"
        assert "PIXEL" not in hdul["DENSITY_MEAN"].columns.names


def test_default_nside_matches_the_pixel_size() -> None:
    from astropy_healpix import nside_to_pixel_resolution

    grid = GRIDS["plain"]  # 5 x 3.33 deg pixels
    nside = default_nside(grid)
    size = np.sqrt(np.median(grid.solid_angles())) * u.rad
    assert nside_to_pixel_resolution(nside) <= size < 2 * nside_to_pixel_resolution(nside)


@pytest.mark.parametrize("full_sky", [False, True], ids=["partial", "full-sky"])
def test_healpix_keeps_coverage_and_reliable_distances(full_sky: bool, tmp_path: Path) -> None:
    # the flags a map carries (issue 11: a map knows where the stars constrain it) travel to HEALPix like the
    # summaries: each pixel takes the column that holds its centre
    grid = Grid(l=(0, 360, 36), b=(-90, 90, 18), d=(100, 200, 4), ghost_cells=1) if full_sky else GRIDS["plain"]
    dmap = make_map(grid, n_samples=0)
    rng = np.random.default_rng(3)
    reliable = np.sort(rng.uniform(grid.d_min, grid.d_max, (2, grid.n_b, grid.n_l)), axis=0)
    reliable[:, 0, 0] = np.nan  # a column without stars
    dmap.reliable_distance = reliable
    dmap.coverage = grid.d_centers[:, None, None] <= np.nan_to_num(reliable[1], nan=-1.0)[None]
    nside = 8 if full_sky else 32
    write_healpix(dmap, tmp_path / "hp.fits", nside=nside, order="nested")
    hmap = read_healpix(tmp_path / "hp.fits")
    from astropy_healpix import healpix_to_lonlat

    lon, lat = healpix_to_lonlat(hmap.pixels, nside, order="nested")
    _, i_b, i_l = grid.locate(lon.deg, lat.deg, np.full(hmap.pixels.size, grid.d_max))
    np.testing.assert_array_equal(hmap.coverage, dmap.coverage[:, i_b, i_l])
    np.testing.assert_array_equal(hmap.reliable_distance, reliable[:, i_b, i_l])
    assert hmap.coverage.dtype == bool
    assert hmap.coverage.any()
    assert not hmap.coverage.all()
    # a map without the flags writes none and reads None
    write_healpix(make_map(grid, n_samples=0), tmp_path / "bare.fits", nside=nside)
    bare = read_healpix(tmp_path / "bare.fits")
    assert bare.coverage is None
    assert bare.reliable_distance is None
