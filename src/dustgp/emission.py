"""Model extinction compared with a dust-emission map (paper Sect. 8; METHOD.md §8).

The emission map (Planck tau_353, an 850 µm flux, a dust intensity, ...) is sampled at the centres of the
map's (l, b) pixels, and the ratio of the model's extinction to the emission is normalised by its median:

.. math:: r(l, b) = \\frac{A(l, b) / E(l, b)}{\\operatorname{median}_{l, b} \\left[ A / E \\right]}

Sightlines where the emission finds more dust than the extinction model (dense, optically thick cores that no
star sees through) show low ratios.

Accepted emission maps: a HEALPix map (:class:`HealpixSky`, a ``(values, order)`` pair, or a HEALPix binary
table HDU with ``ORDERING``, ``NSIDE`` and ``COORDSYS`` in its header), an image with a celestial WCS (an
image HDU or an ``(array, WCS)`` pair), or a FITS file name (read by :func:`dustgp.io.read_emission`).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import astropy.units as u
import numpy as np
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.wcs import WCS

from .query import extinction_plane

if TYPE_CHECKING:
    from .dustmap import DustMap
    from .grid import Grid

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


def reproject_to_grid(
    emission: Any, grid: Grid, *, method: Literal["bilinear", "nearest"] = "bilinear", field: int | str = 0
) -> np.ndarray:
    """Sample an emission map at the centres of a grid's (b, l) pixels.

    Parameters
    ----------
    emission
        Any input accepted by :func:`emission_ratio`.
    grid : Grid
    method : {"bilinear", "nearest"}
        HEALPix: bilinear interpolation between the four nearest pixel centres
        (``astropy_healpix.interpolate_bilinear_lonlat``) or the pixel holding the point. Image: bilinear
        (``scipy.ndimage.map_coordinates``, order 1) or nearest pixel.
    field : int or str
        Column of a HEALPix table (see :func:`healpix_from_hdu`).

    Returns
    -------
    numpy.ndarray, shape (n_b, n_l)
        Point samples at the pixel centres (no averaging over the map pixel: smooth a much finer emission map
        to the map's resolution first); NaN outside the emission map or where it has no data.
    """
    sky = _as_emission(emission, field)
    b, l = np.meshgrid(grid.b_centers, grid.l_centers, indexing="ij")
    coords = SkyCoord(l=l * u.deg, b=b * u.deg, frame="galactic")
    if isinstance(sky, HealpixSky):
        native = coords if sky.frame == "galactic" else coords.transform_to(sky.frame)
        sph = native.spherical
        if method == "bilinear":
            from astropy_healpix import interpolate_bilinear_lonlat

            return np.asarray(interpolate_bilinear_lonlat(sph.lon, sph.lat, sky.values, order=sky.order))
        from astropy_healpix import lonlat_to_healpix

        return sky.values[lonlat_to_healpix(sph.lon, sph.lat, sky.nside, order=sky.order)]
    image, wcs = sky
    x, y = wcs.world_to_pixel(coords)
    ny, nx = image.shape
    inside = (x >= -0.5) & (x <= nx - 0.5) & (y >= -0.5) & (y <= ny - 0.5) & np.isfinite(x) & np.isfinite(y)
    # points within the outer half pixel are sampled at the edge pixel rather than lost to the boundary
    xc, yc = np.clip(np.nan_to_num(x), 0, nx - 1), np.clip(np.nan_to_num(y), 0, ny - 1)
    if method == "bilinear":
        from scipy.ndimage import map_coordinates

        values = map_coordinates(image, [yc.ravel(), xc.ravel()], order=1, mode="nearest").reshape(x.shape)
    else:
        values = image[np.rint(yc).astype(int), np.rint(xc).astype(int)]
    return np.where(inside, values, np.nan)


def emission_ratio(
    dmap: DustMap,
    emission: Any,
    *,
    distance: float | u.Quantity | None = None,
    mode: str = "mean",
    method: Literal["bilinear", "nearest"] = "bilinear",
    field: int | str = 0,
) -> EmissionRatio:
    """Ratio of the model's extinction to a dust-emission map, normalised by its median (paper Sect. 8).

    Parameters
    ----------
    dmap : DustMap
    emission : HealpixSky, tuple, astropy.io.fits HDU, str or os.PathLike
        A HEALPix map (:class:`HealpixSky`, ``(values, "ring" | "nested")`` in Galactic coordinates, or a
        HEALPix table HDU), an image with a celestial WCS (an image HDU or ``(array, WCS)``), or a FITS file
        name.
    distance : float or astropy.units.Quantity, optional
        Integrate the extinction to this distance (pc for a bare number); default ``d_max`` (total
        extinction).
    mode : {"mean", "median"}
        Which posterior summary of the extinction.
    method : {"bilinear", "nearest"}
        Resampling of the emission map, see :func:`reproject_to_grid`.
    field : int or str
        Column of a HEALPix table.

    Returns
    -------
    EmissionRatio
        Ratio, reprojected emission and extinction, shape (n_b, n_l), and the median used.
    """
    grid = dmap.grid
    d_pc = grid.d_max if distance is None else float(u.Quantity(distance, u.pc).to_value(u.pc))
    extinction = extinction_plane(dmap, d_pc, mode=mode)
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
