"""Extinction / emission ratio maps (paper Sect. 8) on synthetic HEALPix and WCS emission maps."""

from __future__ import annotations

from pathlib import Path

import astropy.units as u
import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.wcs import WCS
from astropy_healpix import healpix_to_lonlat, nside_to_pixel_resolution

from dustgp.emission import EmissionRatio, HealpixSky, emission_ratio, healpix_from_hdu, reproject_to_grid
from dustgp.grid import Grid
from dustgp.posterior_map import PosteriorMap

C = 2.5  # mag per emission unit: emission = A / C
GRID = Grid(l=(40, 80, 40), b=(-10, 10, 20), d=(100, 300, 4), ghost_cells=1)
# |grad f| / min f over the map, per deg: bounds the error of sampling at a point up to one pixel away
GRAD_LN_F = np.hypot(0.5 / 20, 0.3 / 10) / 0.15


def f(l: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Total extinction on the sky, mag: linear in (l, b), positive over the map."""
    return 1.0 + 0.5 * (((np.asarray(l) - 60.0 + 180.0) % 360.0) - 180.0) / 20.0 + 0.3 * np.asarray(b) / 10.0


def make_map() -> PosteriorMap:
    # uniform density along each sightline, chosen so that the extinction to d_max is f at the pixel centre
    b, l = np.meshgrid(GRID.b_centers, GRID.l_centers, indexing="ij")
    rho = np.broadcast_to(f(l, b) / GRID.d_max, GRID.shape).copy()
    ext = np.cumsum(rho * GRID.path_lengths[:, None, None], axis=0)
    return PosteriorMap(
        grid=GRID,
        percentiles=np.array([50.0]),
        density_mean=rho,
        density_std=0 * rho,
        density_percentiles=rho[None],
        extinction_mean=ext,
        extinction_std=0 * ext,
        extinction_percentiles=ext[None],
    )


@pytest.fixture(scope="module")
def dmap() -> PosteriorMap:
    return make_map()


def healpix_emission(nside: int, order: str, frame: str = "galactic", doubled: bool = False) -> np.ndarray:
    lon, lat = healpix_to_lonlat(np.arange(12 * nside**2), nside, order=order)
    if frame == "galactic":
        l, b = lon.deg, lat.deg
    else:
        gal = SkyCoord(lon, lat, frame=frame).galactic
        l, b = gal.l.deg, gal.b.deg
    values = f(l, b) / C
    if doubled:
        values = np.where((l >= 60) & (l <= 70), 2 * values, values)
    return values


def healpix_hdu(
    values: np.ndarray,
    order: str,
    *,
    coordsys: str = "G",
    per_row: int = 1024,
    explicit: np.ndarray | None = None,
) -> fits.BinTableHDU:
    """A HEALPix binary table as the HEALPix / Planck convention writes it."""
    nside = int(np.sqrt(values.size / 12))
    if explicit is None:
        rows = values.reshape(-1, per_row)
        columns = [fits.Column(name="TAU353", format=f"{per_row}D", array=rows)]
    else:
        columns = [
            fits.Column(name="PIXEL", format="K", array=explicit),
            fits.Column(name="TAU353", format="D", array=values[explicit]),
        ]
    hdu = fits.BinTableHDU.from_columns(columns)
    hdu.header["PIXTYPE"] = "HEALPIX"
    hdu.header["ORDERING"] = "NESTED" if order == "nested" else "RING"
    hdu.header["NSIDE"] = nside
    hdu.header["COORDSYS"] = coordsys
    hdu.header["INDXSCHM"] = "EXPLICIT" if explicit is not None else "IMPLICIT"
    return hdu


# ----- HEALPix ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("order", ["ring", "nested"])
def test_emission_proportional_to_extinction_gives_ratio_one(dmap: PosteriorMap, order: str, tmp_path: Path) -> None:
    values = healpix_emission(128, order)
    path = tmp_path / f"tau_{order}.fits"
    fits.HDUList([fits.PrimaryHDU(), healpix_hdu(values, order)]).writeto(path)
    result = emission_ratio(dmap, path, method="bilinear")
    assert isinstance(result, EmissionRatio)
    assert result.ratio.shape == result.emission.shape == (GRID.n_b, GRID.n_l)
    # astropy_healpix's bilinear scheme is linear in longitude along two rings and linear in latitude between
    # them, so it reproduces a field linear in (l, b) exactly (to rounding)
    np.testing.assert_allclose(result.ratio, 1.0, rtol=1e-12)
    assert result.median == pytest.approx(C, rel=1e-12)
    np.testing.assert_allclose(result.extinction, dmap.extinction_mean[-1], rtol=0)


@pytest.mark.parametrize("order", ["ring", "nested"])
def test_doubled_emission_halves_the_ratio(dmap: PosteriorMap, order: str) -> None:
    values = healpix_emission(128, order, doubled=True)
    result = emission_ratio(dmap, (values, order), method="bilinear")
    l = GRID.l_centers[None, :] * np.ones((GRID.n_b, 1))
    # the doubled band covers a quarter of the pixels, so the median is still C; away from the band's edges
    # (one HEALPix pixel, 0.46 deg) bilinear interpolation sees only one side
    inside, outside = (l > 61) & (l < 69), (l < 59) | (l > 71)
    np.testing.assert_allclose(result.ratio[inside], 0.5, rtol=1e-12)
    np.testing.assert_allclose(result.ratio[outside], 1.0, rtol=1e-12)
    assert result.median == pytest.approx(C, rel=1e-12)


def test_nearest_pixel_sampling(dmap: PosteriorMap) -> None:
    nside = 128
    result = emission_ratio(dmap, HealpixSky(healpix_emission(nside, "nested"), order="nested"), method="nearest")
    # the pixel centre holding a point is less than one pixel-resolution away: first-order bound, twice
    # (ratio and its median)
    bound = 2 * GRAD_LN_F * nside_to_pixel_resolution(nside).to_value(u.deg)
    np.testing.assert_allclose(result.ratio, 1.0, atol=bound)


def test_equatorial_healpix_is_rotated(dmap: PosteriorMap) -> None:
    nside = 128
    values = healpix_emission(nside, "ring", frame="icrs")
    result = emission_ratio(dmap, healpix_hdu(values, "ring", coordsys="C"))
    bound = 2 * GRAD_LN_F * nside_to_pixel_resolution(nside).to_value(u.deg)
    np.testing.assert_allclose(result.ratio, 1.0, atol=bound)
    with pytest.raises(ValueError, match="COORDSYS"):
        healpix_from_hdu(healpix_hdu(values, "ring", coordsys="E"))


def test_partial_sky_healpix(dmap: PosteriorMap) -> None:
    nside = 64
    values = healpix_emission(nside, "nested")
    lon, lat = healpix_to_lonlat(np.arange(values.size), nside, order="nested")
    near = np.flatnonzero((lon.deg > 35) & (lon.deg < 85) & (np.abs(lat.deg) < 15))
    result = emission_ratio(dmap, healpix_hdu(values, "nested", explicit=near), method="bilinear")
    np.testing.assert_allclose(result.ratio, 1.0, rtol=1e-12)
    # no data on the right half of the sky around the map: NaN there, not zeros
    far = np.flatnonzero(lon.deg >= 60)
    half = emission_ratio(dmap, healpix_hdu(values, "nested", explicit=far), method="bilinear")
    assert np.isnan(half.ratio[:, GRID.l_centers < 59]).all()
    assert np.isfinite(half.ratio[:, GRID.l_centers > 61]).all()


def test_healpy_written_map(dmap: PosteriorMap, tmp_path: Path) -> None:
    healpy = pytest.importorskip("healpy")
    values = healpix_emission(64, "nested")
    healpy.write_map(tmp_path / "hp.fits", values, nest=True, coord="G", dtype=np.float64)
    np.testing.assert_allclose(emission_ratio(dmap, tmp_path / "hp.fits", method="bilinear").ratio, 1.0, rtol=1e-12)


def test_unseen_and_bad_inputs(dmap: PosteriorMap) -> None:
    values = healpix_emission(32, "ring")
    values[:] = -1.6375e30  # healpy.UNSEEN everywhere
    with pytest.raises(ValueError, match="no positive value"):
        emission_ratio(dmap, (values, "ring"))
    with pytest.raises(TypeError, match="emission"):
        emission_ratio(dmap, values)
    with pytest.raises(ValueError, match="12 nside"):
        HealpixSky(np.ones(100))


# ----- images with a WCS ------------------------------------------------------------------------------------
def car_image(l_range: tuple[float, float], step: float = 0.1) -> tuple[np.ndarray, WCS]:
    n_l = round((l_range[1] - l_range[0]) / step)
    n_b = round(30 / step)
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["GLON-CAR", "GLAT-CAR"]
    wcs.wcs.cdelt = [-step, step]
    wcs.wcs.crval = [l_range[1] - step / 2, 0.0]
    wcs.wcs.crpix = [1.0, (n_b + 1) / 2]
    y, x = np.mgrid[:n_b, :n_l]
    l, b = wcs.pixel_to_world_values(x, y)
    return f(l, b) / C, wcs


def test_wcs_image(dmap: PosteriorMap) -> None:
    image, wcs = car_image((35, 85))
    # CAR with CRVAL2 = 0 is linear in (l, b), and so is bilinear interpolation in its pixels: exact
    np.testing.assert_allclose(emission_ratio(dmap, (image, wcs), method="bilinear").ratio, 1.0, rtol=1e-10)
    hdu = fits.ImageHDU(image, header=wcs.to_header())
    np.testing.assert_allclose(emission_ratio(dmap, hdu, method="bilinear").ratio, 1.0, rtol=1e-10)
    nearest = emission_ratio(dmap, hdu, method="nearest")
    np.testing.assert_allclose(nearest.ratio, 1.0, atol=2 * GRAD_LN_F * 0.1)


def test_wcs_image_partial_coverage_gives_nan(dmap: PosteriorMap) -> None:
    image, wcs = car_image((55, 85))
    emission = reproject_to_grid((image, wcs), GRID, method="bilinear")
    assert np.isnan(emission[:, GRID.l_centers < 55]).all()
    assert np.isfinite(emission[:, GRID.l_centers > 55.5]).all()


def equatorial_tan(*, l: float, step: float, n: int) -> tuple[WCS, SkyCoord]:
    """An n × n equatorial TAN image of ``step`` deg pixels centred on (l, 0) Galactic, and its pixels' positions."""
    centre = SkyCoord(l=l * u.deg, b=0 * u.deg, frame="galactic").icrs
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.cdelt = [-step, step]
    wcs.wcs.crval = [centre.ra.deg, centre.dec.deg]
    wcs.wcs.crpix = [(n + 1) / 2, (n + 1) / 2]
    y, x = np.mgrid[:n, :n]
    return wcs, wcs.pixel_to_world(x, y).galactic


def test_equatorial_tan_image(dmap: PosteriorMap) -> None:
    step = 0.05
    wcs, gal = equatorial_tan(l=60.0, step=step, n=1000)
    image = f(gal.l.deg, gal.b.deg) / C
    result = emission_ratio(dmap, (image, wcs))
    np.testing.assert_allclose(result.ratio, 1.0, atol=2 * GRAD_LN_F * step)


# ----- pixel averages (method="average", the default) --------------------------------------------------------
COARSE = Grid(l=(40, 60, 10), b=(-10, 10, 10), d=(100, 300, 4), ghost_cells=0)  # 2 deg pixels
PERIOD, ALPHA = 3.0, 3.0  # deg; dimensionless


def fine_sky(l: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Structure finer than a map pixel: a 3 deg period in l, times exp(3 sin b)."""
    return (2.0 + np.cos(2 * np.pi * np.asarray(l) / PERIOD)) * np.exp(ALPHA * np.sin(np.deg2rad(b)))


def analytic_pixel_average(grid: Grid) -> np.ndarray:
    """Solid-angle mean of fine_sky over each (b, l) pixel: the l and b factors separate.

    .. math:: \\bar f = \\frac{\\int g \\, dl}{\\Delta l} \\,
              \\frac{\\int e^{\\alpha \\sin b} \\cos b \\, db}{\\sin b_2 - \\sin b_1}
              = \\left[2 + \\frac{\\sin k l_2 - \\sin k l_1}{k \\Delta l}\\right]
                \\frac{e^{\\alpha \\sin b_2} - e^{\\alpha \\sin b_1}}{\\alpha (\\sin b_2 - \\sin b_1)}
    """
    k = 2 * np.pi / PERIOD
    l1, l2 = grid.l_edges[:-1], grid.l_edges[1:]
    s1, s2 = np.sin(np.deg2rad(grid.b_edges[:-1])), np.sin(np.deg2rad(grid.b_edges[1:]))
    g = 2.0 + (np.sin(k * l2) - np.sin(k * l1)) / (k * (l2 - l1))
    h = (np.exp(ALPHA * s2) - np.exp(ALPHA * s1)) / (ALPHA * (s2 - s1))
    return h[:, None] * g[None, :]


def interpolation_bound(spacing_deg: float, k: int, rotated: bool = False) -> float:
    """Largest error of the sub-pixel mean of a bilinear interpolant of fine_sky, same units as fine_sky.

    Linear interpolation over a spacing h errs by at most h² max|f''| / 8 along each axis, and the midpoint rule
    over k sub-pixels of a 2 deg pixel by (2/k)² max|f''| / 24. Second derivatives of fine_sky on |b| <= 10 deg,
    per deg²: f_ll <= (2 pi / P)² e^(alpha sin 10°); f_bb and f_lb are 500 and 40 times smaller. For an image
    in another frame the axes are rotated: then all of them, twice, bound the second derivative along any axis.
    """
    top = np.exp(ALPHA * np.sin(np.deg2rad(10.0)))
    f_ll = (2 * np.pi / PERIOD) ** 2 * top
    deg = np.pi / 180
    f_bb = 3.0 * (ALPHA**2 + ALPHA) * top * deg**2
    f_lb = (2 * np.pi / PERIOD) * ALPHA * top * deg
    second = 2 * (f_ll + 2 * f_lb + f_bb) if rotated else f_ll + f_bb
    return spacing_deg**2 * second / 8 + (2.0 / k) ** 2 * second / 24


def test_healpix_pixel_average_matches_the_analytic_average() -> None:
    nside = 512  # 0.11 deg pixels: the 3 deg period is resolved, the 2 deg map pixels are not
    lon, lat = healpix_to_lonlat(np.arange(12 * nside**2), nside, order="ring")
    sky = HealpixSky(fine_sky(lon.deg, lat.deg), order="ring")
    truth = analytic_pixel_average(COARSE)
    averaged = reproject_to_grid(sky, COARSE)
    # astropy_healpix interpolates along rings (spaced 90/nside deg in l at |b| < 42 deg), then between rings
    # (closer than that in b); sub-pixels are at most half a HEALPix pixel: k = ceil(2 * 2 deg / 0.11 deg)
    k = int(np.ceil(2 * 2.0 / nside_to_pixel_resolution(nside).to_value(u.deg)))
    bound = interpolation_bound(90.0 / nside, k)
    np.testing.assert_allclose(averaged, truth, rtol=0, atol=bound)
    # the point samples at the pixel centres miss it by far more: the test can tell the two apart
    centres = reproject_to_grid(sky, COARSE, method="bilinear")
    assert np.abs(centres - truth).max() > 10 * bound


def test_image_pixel_average_matches_the_analytic_average() -> None:
    # an equatorial TAN image at 0.05 deg around the map: the average goes through a change of frame
    step = 0.05
    wcs, gal = equatorial_tan(l=50.0, step=step, n=640)
    image = fine_sky(gal.l.deg, gal.b.deg)
    averaged = reproject_to_grid((image, wcs), COARSE)
    # TAN pixels grow as 1/cos² of the distance from the centre: 1.06 times at the map's 14 deg corners
    bound = interpolation_bound(1.06 * step, 64, rotated=True)
    np.testing.assert_allclose(averaged, analytic_pixel_average(COARSE), rtol=0, atol=bound)


def test_pixel_average_is_nan_where_the_emission_map_does_not_cover_the_pixel() -> None:
    image, wcs = car_image((55, 85))
    emission = reproject_to_grid((image, wcs), GRID)
    assert np.isnan(emission[:, GRID.l_centers < 55]).all()
    assert np.isfinite(emission[:, GRID.l_centers > 56]).all()
    with pytest.raises(ValueError, match="uniform"):
        reproject_to_grid((image, wcs), Grid(l=[50, 51, 53], b=(-5, 5, 2), d=(100, 300, 2), ghost_cells=0))
