"""Model extinction compared with a dust-emission map (paper Sect. 8; docs: Method §8).

The emission map (Planck tau_353, an 850 µm flux, a dust intensity, ...) is averaged over each of the map's
(l, b) pixels (or sampled at their centres, see :func:`reproject_to_grid`), and the ratio of the model's
extinction to the emission is normalised by its median:

.. math:: r(l, b) = \\frac{A(l, b) / E(l, b)}{\\operatorname{median}_{l, b} \\left[ A / E \\right]}

Sightlines where the emission finds more dust than the extinction model (dense, optically thick cores that no
star sees through) show low ratios.

Accepted emission maps: a HEALPix map (:class:`HealpixSky`, a ``(values, order)`` pair, or a HEALPix binary
table HDU with ``ORDERING``, ``NSIDE`` and ``COORDSYS`` in its header), an image with a celestial WCS (an
image HDU or an ``(array, WCS)`` pair), or a FITS file name (read by :func:`dustgp.io.read_emission`).
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import astropy.units as u
import numpy as np
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.wcs import WCS
from astropy.wcs.utils import proj_plane_pixel_scales
from astropy_healpix import interpolate_bilinear_lonlat, lonlat_to_healpix, nside_to_pixel_resolution
from scipy.ndimage import map_coordinates

from ._units import distance_pc
from .io import celestial_wcs
from .query import extinction_plane

if TYPE_CHECKING:
    from .grid import Grid
    from .posterior_map import PosteriorMap

__all__ = ["UNSEEN", "EmissionRatio", "HealpixSky", "emission_ratio", "healpix_from_hdu", "reproject_to_grid"]

log = logging.getLogger(__name__)

#: The HEALPix "no data" value (healpy.UNSEEN); read as NaN.
UNSEEN = -1.6375e30
_FRAMES = {
    "G": "galactic",
    "GALACTIC": "galactic",
    "C": "icrs",
    "CELESTIAL": "icrs",
    "Q": "icrs",
    "EQUATORIAL": "icrs",
}


@dataclass(frozen=True)
class HealpixSky:
    """A full-sky HEALPix map in memory.

    Attributes
    ----------
    values : numpy.ndarray, shape (12 nside²,)
        One value per pixel; NaN where there is no data.
    order : {"nested", "ring"}
    frame : str
        The coordinate frame of the pixelisation (``"galactic"`` or ``"icrs"``).
    """

    values: np.ndarray
    order: Literal["nested", "ring"] = "ring"
    frame: str = "galactic"

    def __post_init__(self) -> None:
        from astropy_healpix import npix_to_nside

        values = np.asarray(self.values, dtype=float)
        if values.ndim != 1:
            raise ValueError(f"HealpixSky: expected a 1D array of 12 nside² values, got shape {values.shape}")
        try:
            npix_to_nside(values.size)
        except ValueError:
            raise ValueError(f"HealpixSky: expected 12 nside² values (nside a power of 2), got {values.size}") from None
        order = str(self.order).lower()
        order = {"nest": "nested", "nested": "nested", "ring": "ring"}.get(order, order)
        if order not in ("nested", "ring"):
            raise ValueError(f"order: expected 'nested' or 'ring', got {self.order!r}")
        object.__setattr__(self, "values", np.where(values <= UNSEEN * 0.999, np.nan, values))
        object.__setattr__(self, "order", order)

    @property
    def nside(self) -> int:
        return round(float(np.sqrt(self.values.size / 12)))


@dataclass(frozen=True)
class EmissionRatio:
    """Result of :func:`emission_ratio`; all arrays on the map's (b, l) pixels, shape (n_b, n_l).

    Attributes
    ----------
    ratio : numpy.ndarray
        ``(A / E) / median``, dimensionless; NaN where the emission is missing or not positive.
    emission : numpy.ndarray
        The emission map sampled at the pixel centres, in the emission map's units.
    extinction : numpy.ndarray
        The model extinction used, mag.
    median : float
        Median of ``A / E`` over valid pixels, mag per emission unit.
    distance : astropy.units.Quantity
        Distance the extinction is integrated to, pc.
    """

    ratio: np.ndarray
    emission: np.ndarray
    extinction: np.ndarray
    median: float
    distance: u.Quantity


def healpix_from_hdu(hdu: fits.BinTableHDU, *, field: int | str = 0) -> HealpixSky:
    """A :class:`HealpixSky` from a HEALPix binary-table HDU (the HEALPix / Planck FITS convention).

    Parameters
    ----------
    hdu : astropy.io.fits.BinTableHDU
        Header must give ``ORDERING`` (``RING``/``NESTED``) and ``NSIDE``; ``COORDSYS`` (``G``, or ``C`` for
        equatorial) is checked and assumed Galactic when absent. Implicit indexing (values packed in rows,
        e.g. 1024 per row) or explicit (``INDXSCHM = 'EXPLICIT'`` with a ``PIXEL`` column).
    field : int or str
        The data column: a name, or an index counted over the columns other than ``PIXEL``.

    Returns
    -------
    HealpixSky
    """
    header = hdu.header
    if "ORDERING" not in header or "NSIDE" not in header:
        raise ValueError("HEALPix HDU: expected ORDERING and NSIDE header cards")
    nside = int(header["NSIDE"])
    order = "nested" if str(header["ORDERING"]).upper().startswith("NEST") else "ring"
    coordsys = str(header.get("COORDSYS", "")).strip().upper()
    if not coordsys:
        log.warning("HEALPix HDU has no COORDSYS card; assuming Galactic coordinates")
        coordsys = "G"
    if coordsys not in _FRAMES:
        raise ValueError(f"COORDSYS: expected Galactic ('G') or equatorial ('C'), got {coordsys!r}")
    names = [c.name for c in hdu.columns]
    data_names = [n for n in names if n.upper() != "PIXEL"]
    name = field if isinstance(field, str) else data_names[field]
    values = np.asarray(hdu.data[name], dtype=float).ravel()
    bad = header.get("BAD_DATA")
    if bad is not None:
        values = np.where(values == float(bad), np.nan, values)
    npix = 12 * nside**2
    if str(header.get("INDXSCHM", "IMPLICIT")).upper() == "EXPLICIT":
        pixels = np.asarray(hdu.data["PIXEL" if "PIXEL" in names else names[0]], dtype=np.int64).ravel()
        full = np.full(npix, np.nan)
        full[pixels] = values
        values = full
    elif values.size != npix:
        raise ValueError(f"HEALPix HDU: expected {npix} values for NSIDE={nside}, got {values.size}")
    return HealpixSky(values=values, order=order, frame=_FRAMES[coordsys])  # type: ignore[arg-type]


def _as_emission(emission: Any, field: int | str) -> HealpixSky | tuple[np.ndarray, WCS]:
    """Normalise the accepted inputs to a HealpixSky or an (image, celestial WCS) pair."""
    if isinstance(emission, str | os.PathLike):
        from .io import read_emission

        emission = read_emission(emission)
    if isinstance(emission, HealpixSky):
        return emission
    if isinstance(emission, fits.BinTableHDU):
        return healpix_from_hdu(emission, field=field)
    if isinstance(emission, fits.PrimaryHDU | fits.ImageHDU):
        return _image_pair(np.asarray(emission.data), WCS(emission.header))
    if isinstance(emission, tuple) and len(emission) == 2:
        values, second = emission
        if isinstance(second, WCS):
            return _image_pair(np.asarray(values), second)
        if isinstance(second, str):
            return HealpixSky(values=np.asarray(values), order=second)  # type: ignore[arg-type]
    raise TypeError(
        "emission: expected a HealpixSky, (values, 'ring'|'nested'), (image, WCS), a FITS HDU or a file "
        "name; "
        f"got {type(emission).__name__}"
    )


def _image_pair(image: np.ndarray, wcs: WCS) -> tuple[np.ndarray, WCS]:
    celestial = wcs.celestial
    if celestial.naxis != 2:
        raise ValueError("emission image: expected a WCS with two celestial axes")
    image = np.squeeze(image)
    if image.ndim != 2:
        raise ValueError(f"emission image: expected a 2D image, got shape {image.shape}")
    return image.astype(float, copy=False), celestial


#: Sub-samples per map pixel and axis are chosen so that each is at most this fraction of a pixel of the
#: emission map (HEALPix or image; :func:`reproject_to_grid`, ``method="average"``).
SUBSAMPLES_PER_HEALPIX_PIXEL = 2.0
#: Largest number of sub-samples per map pixel and axis (bounds the work for very fine emission maps).
MAX_SUBSAMPLES = 64
#: Sub-samples interpolated at once (bounds memory: a few arrays of this many float64).
SUBSAMPLE_CHUNK = 2_000_000


def reproject_to_grid(
    emission: Any,
    grid: Grid,
    *,
    method: Literal["average", "bilinear", "nearest"] = "average",
    field: int | str = 0,
) -> np.ndarray:
    """The emission map on a grid's (b, l) pixels: averaged over each pixel, or sampled at its centre.

    Parameters
    ----------
    emission
        Any input accepted by :func:`emission_ratio`.
    grid : Grid
        A grid with uniform l and b spacing for ``method="average"`` (any grid for the point samples).
    method : {"average", "bilinear", "nearest"}
        ``"average"`` (default): the mean of the emission over each map pixel, weighted by solid angle. The
        emission map is interpolated bilinearly with astropy's ``reproject`` package (the ``emission`` extra;
        ``reproject_from_healpix`` for HEALPix, ``reproject_interp`` for an image with any celestial WCS) at
        k × k sub-pixels of each map pixel, k chosen so that a sub-pixel is at most half a pixel of the
        emission map (at most :data:`MAX_SUBSAMPLES`), and the sub-pixels are averaged with their exact solid
        angles. A map pixel with any sub-pixel outside the emission map or without data is NaN.
        ``"bilinear"`` / ``"nearest"``: point samples at the pixel centres (HEALPix:
        ``astropy_healpix.interpolate_bilinear_lonlat`` or the pixel holding the point; image:
        ``scipy.ndimage.map_coordinates`` of order 1, or the nearest pixel). Right only when the emission map
        is already as coarse as the grid.
    field : int or str
        Column of a HEALPix table (see :func:`healpix_from_hdu`).

    Returns
    -------
    numpy.ndarray, shape (n_b, n_l)
        In the emission map's units; NaN outside the emission map or where it has no data.

    Raises
    ------
    ImportError
        ``method="average"`` without the ``reproject`` package.
    ValueError
        ``method="average"`` on a grid with non-uniform l or b spacing, or an unknown method.

    Notes
    -----
    Planck dust maps come at 5′ resolution on HEALPix nside 2048 (pixels of 1.7′), while a map pixel is
    typically 10′-60′: point samples at pixel centres then see 5′ of the sky and alias its small-scale
    structure; the pixel average compares like with like, the extinction of a pixel being itself the average
    of its sightlines.
    """
    sky = _as_emission(emission, field)
    if method == "average":
        return _average_healpix(sky, grid) if isinstance(sky, HealpixSky) else _average_image(sky, grid)
    if method not in ("bilinear", "nearest"):
        raise ValueError(f"method: expected 'average', 'bilinear' or 'nearest', got {method!r}")
    b, l = np.meshgrid(grid.b_centers, grid.l_centers, indexing="ij")
    coords = SkyCoord(l=l * u.deg, b=b * u.deg, frame="galactic")
    if isinstance(sky, HealpixSky):
        native = coords if sky.frame == "galactic" else coords.transform_to(sky.frame)
        sph = native.spherical
        if method == "bilinear":
            return np.asarray(interpolate_bilinear_lonlat(sph.lon, sph.lat, sky.values, order=sky.order))
        return sky.values[lonlat_to_healpix(sph.lon, sph.lat, sky.nside, order=sky.order)]
    image, wcs = sky
    x, y = wcs.world_to_pixel(coords)
    ny, nx = image.shape
    inside = (x >= -0.5) & (x <= nx - 0.5) & (y >= -0.5) & (y <= ny - 0.5) & np.isfinite(x) & np.isfinite(y)
    # points within the outer half pixel are sampled at the edge pixel rather than lost to the boundary
    xc, yc = np.clip(np.nan_to_num(x), 0, nx - 1), np.clip(np.nan_to_num(y), 0, ny - 1)
    if method == "bilinear":
        values = map_coordinates(image, [yc.ravel(), xc.ravel()], order=1, mode="nearest").reshape(x.shape)
    else:
        values = image[np.rint(yc).astype(int), np.rint(xc).astype(int)]
    return np.where(inside, values, np.nan)


def _reproject() -> Any:
    try:
        import reproject
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError(
            "method='average' needs the reproject package: pip install 'dustgp[emission]' (or pass "
            "method='bilinear' to sample the emission map at pixel centres)"
        ) from None
    return reproject


def _grid_wcs(grid: Grid, k: int = 1) -> WCS:
    """The grid's Galactic CAR WCS (l increasing to the left), its pixels split k × k (k = 1: the grid's own)."""
    wcs = celestial_wcs(grid)  # uniform spacing is checked there
    if k == 1:
        return wcs
    fine = wcs.deepcopy()
    fine.wcs.cdelt = wcs.wcs.cdelt / k
    # coarse 0-based pixel x covers fine pixels k x .. k x + k - 1, whose middle is fine coordinate k x + (k-1)/2
    fine.wcs.crpix = k * (wcs.wcs.crpix - 1.0) + (k - 1) / 2.0 + 1.0
    fine.wcs.set()
    fine.pixel_shape = (grid.n_l * k, grid.n_b * k)
    return fine


def _subsamples(resolution_deg: float, grid: Grid) -> int:
    """Sub-pixels per map pixel and axis: each at most 1/SUBSAMPLES_PER_HEALPIX_PIXEL of the input's pixel."""
    step = max(float(np.abs(np.diff(grid.l_edges)).max()), float(np.abs(np.diff(grid.b_edges)).max()))
    return int(min(MAX_SUBSAMPLES, max(1, math.ceil(SUBSAMPLES_PER_HEALPIX_PIXEL * step / resolution_deg))))


def _average_image(sky: tuple[np.ndarray, WCS], grid: Grid) -> np.ndarray:
    image, wcs = sky
    resolution = float(np.min(proj_plane_pixel_scales(wcs)))  # deg per image pixel (CUNIT deg)

    def interpolate(part: WCS, shape: tuple[int, int]) -> np.ndarray:
        values, _ = _reproject().reproject_interp((image, wcs), part, shape_out=shape, order="bilinear")
        return values

    return _block_average(interpolate, grid, _subsamples(resolution, grid))


def _average_healpix(sky: HealpixSky, grid: Grid) -> np.ndarray:
    resolution = float(nside_to_pixel_resolution(sky.nside).to_value(u.deg))

    def interpolate(part: WCS, shape: tuple[int, int]) -> np.ndarray:
        values, _ = _reproject().reproject_from_healpix(
            (sky.values, sky.frame), part, shape_out=shape, nested=sky.order == "nested", order="bilinear"
        )
        return values

    return _block_average(interpolate, grid, _subsamples(resolution, grid))


def _block_average(interpolate: Any, grid: Grid, k: int) -> np.ndarray:
    """Solid-angle-weighted mean of k × k interpolated sub-pixels per map pixel, in chunks of map rows.

    .. math:: \\bar E_{ij} = \\sum_{s, t} w_s \\, E(l_{it}, b_{js}) / k, \\qquad
              w_s \\propto \\sin b_{js}^{+} - \\sin b_{js}^{-}, \\quad \\sum_s w_s = 1,

    the midpoint rule for :math:`\\iint E \\cos b \\, db \\, dl / \\iint \\cos b \\, db \\, dl` over the pixel
    (the solid angle of a sub-pixel row is exact). A NaN sub-pixel (no data, outside the input) makes its
    pixel NaN.
    """
    fine = _grid_wcs(grid, k)
    n_b, n_l = grid.n_b, grid.n_l
    b_fine = np.linspace(grid.b_edges[0], grid.b_edges[-1], n_b * k + 1)
    weight = np.diff(np.sin(np.deg2rad(b_fine))).reshape(n_b, k)
    weight = weight / weight.sum(axis=1, keepdims=True)
    out = np.empty((n_b, n_l))
    rows_per_chunk = max(1, SUBSAMPLE_CHUNK // (k * k * n_l))
    for start in range(0, n_b, rows_per_chunk):
        stop = min(n_b, start + rows_per_chunk)
        values = interpolate(fine.slice((slice(start * k, stop * k), slice(None))), ((stop - start) * k, n_l * k))
        # (rows, k, n_l, k); the WCS has l increasing to the left, the grid's arrays to the right
        blocks = np.asarray(values, dtype=float).reshape(stop - start, k, n_l, k)[:, :, ::-1, :]
        out[start:stop] = np.einsum("rsjt,rs->rj", blocks, weight[start:stop]) / k
    return out


def emission_ratio(
    dmap: PosteriorMap,
    emission: Any,
    *,
    distance: float | u.Quantity | None = None,
    mode: str = "mean",
    method: Literal["average", "bilinear", "nearest"] = "average",
    field: int | str = 0,
) -> EmissionRatio:
    """Ratio of the model's extinction to a dust-emission map, normalised by its median (paper Sect. 8).

    Parameters
    ----------
    dmap : PosteriorMap
    emission : HealpixSky, tuple, astropy.io.fits HDU, str or os.PathLike
        A HEALPix map (:class:`HealpixSky`, ``(values, "ring" | "nested")`` in Galactic coordinates, or a
        HEALPix table HDU), an image with a celestial WCS (an image HDU or ``(array, WCS)``), or a FITS file
        name.
    distance : float or astropy.units.Quantity, optional
        Integrate the extinction to this distance (pc for a bare number); default ``d_max`` (total
        extinction).
    mode : {"mean", "median"}
        Which posterior summary of the extinction.
    method : {"average", "bilinear", "nearest"}
        Resampling of the emission map, see :func:`reproject_to_grid`: the average over each map pixel
        (default; needs the ``reproject`` package), or a point sample at its centre.
    field : int or str
        Column of a HEALPix table.

    Returns
    -------
    EmissionRatio
        Ratio, reprojected emission and extinction, shape (n_b, n_l), and the median used.
    """
    grid = dmap.grid
    d_pc = grid.d_max if distance is None else float(distance_pc(distance, "emission_ratio: distance"))
    extinction = extinction_plane(dmap, d_pc * u.pc, mode=mode)
    values = reproject_to_grid(emission, grid, method=method, field=field)
    valid = np.isfinite(values) & (values > 0) & np.isfinite(extinction)
    if not valid.any():
        raise ValueError("emission_ratio: the emission map has no positive value inside the map")
    raw = np.full(values.shape, np.nan)
    raw[valid] = extinction[valid] / values[valid]
    median = float(np.median(raw[valid]))
    log.info("emission ratio: median A/E = %.4g over %d of %d pixels", median, valid.sum(), valid.size)
    return EmissionRatio(
        ratio=raw / median, emission=values, extinction=extinction, median=median, distance=d_pc * u.pc
    )
