"""HEALPix files: a map resampled onto HEALPix pixels × distance cells, for maps covering large areas.

One binary table per quantity and one column per distance cell, readable by ``healpy.read_map``; see
:func:`write_healpix` for the layout and :class:`HealpixPosteriorMap` for what :func:`read_healpix` returns.
``astropy_healpix`` is imported only when a HEALPix file is written.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import astropy.units as u
import numpy as np
from astropy.io import fits

from .._atomic import atomic_path
from ..grid import Grid
from ..posterior_map import SUMMARIES, PosteriorMap, SummaryField
from ._common import PathType, _distance_bins_hdu, _native, _reading
from .provenance import _meta_from_header, _primary_cards, _provenance, _provenance_hdu, _read_provenance

__all__ = ["HealpixPosteriorMap", "default_nside", "read_healpix", "write_healpix"]

log = logging.getLogger(__name__)


@dataclass(eq=False)
class HealpixPosteriorMap:
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
    coverage : numpy.ndarray of bool or None, shape (n_d, n_pix)
        True where the stars constrain the cell (see :attr:`dustgp.posterior_map.PosteriorMap.coverage`); None
        when unknown.
    reliable_distance : numpy.ndarray or None, shape (2, n_pix)
        Nearest and farthest star of each pixel's column, pc (NaN without stars); None when unknown.
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
    coverage: np.ndarray | None = None
    reliable_distance: np.ndarray | None = None

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
    dmap: PosteriorMap,
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
    dmap : PosteriorMap
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
    ``DISTANCE_BINS`` lists the distance cells; ``PROVENANCE`` as in :func:`write_fits`. When the map knows
    them, ``COVERAGE`` (unsigned bytes laid out as the other tables: 1 where the stars constrain the cell) and
    ``RELIABLE_DIST`` (columns ``D_MIN`` and ``D_MAX``, pc: each pixel's nearest and farthest star, NaN without
    stars; dustmaps' ``reliable_dist`` range). Posterior samples are not written.
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

    def header(hdu: fits.BinTableHDU) -> fits.Header:
        h = hdu.header
        h["PIXTYPE"] = ("HEALPIX", "HEALPix pixelisation")
        h["ORDERING"] = ("NESTED" if order == "nested" else "RING", "pixel ordering scheme")
        h["NSIDE"] = (nside, "HEALPix resolution parameter")
        h["COORDSYS"] = ("G", "Galactic coordinates")
        h["INDXSCHM"] = ("IMPLICIT" if full else "EXPLICIT", "indexing: implicit or explicit")
        h["OBJECT"] = ("FULLSKY" if full else "PARTIAL", "sky coverage")
        if full:
            h["FIRSTPIX"], h["LASTPIX"] = 0, 12 * nside**2 - 1
        return h

    def table(name: str, cube: np.ndarray, unit: str, level: float | None = None) -> fits.BinTableHDU:
        values = cube[:, i_b, i_l]  # (n_d, n_pix)
        letter = {np.dtype(np.float32): "E", np.dtype(np.uint8): "B"}.get(values.dtype, "D")
        columns = [] if full else [fits.Column(name="PIXEL", format="K", array=pixels)]
        columns += [fits.Column(name=f"BIN{j:03d}", format=letter, unit=unit, array=values[j]) for j in range(grid.n_d)]
        hdu = fits.BinTableHDU.from_columns(columns, name=name)
        h = header(hdu)
        h["NBINS"] = (grid.n_d, "distance cells: columns BIN000 ..")
        h["GHOSTS"] = (grid.ghost_cells, "foreground ghost cells: the first columns")
        h["BUNIT"] = unit
        if level is not None:
            h["PCTLEVEL"] = (float(level), "posterior percentile level")
        return hdu

    hdus: list[Any] = [primary]
    # means and standard deviations first, then each quantity's percentiles, one table per level (SUMMARIES order)
    for summary in sorted(SUMMARIES, key=lambda s: s.per_level):
        data = getattr(dmap, summary.name)
        if summary.per_level:
            for k, name in enumerate(_table_names(summary, dmap.percentiles)):
                hdus.append(table(name, data[k], summary.unit, dmap.percentiles[k]))
        else:
            hdus.append(table(_table_names(summary)[0], data, summary.unit))
    if dmap.coverage is not None:
        hdus.append(table("COVERAGE", dmap.coverage.astype(np.uint8), ""))
    if dmap.reliable_distance is not None:
        near_far = dmap.reliable_distance[:, i_b, i_l]
        columns = [] if full else [fits.Column(name="PIXEL", format="K", array=pixels)]
        columns += [fits.Column(name=n, format="D", unit="pc", array=near_far[k]) for k, n in enumerate(_NEAR_FAR)]
        header(reliable := fits.BinTableHDU.from_columns(columns, name="RELIABLE_DIST"))
        hdus.append(reliable)
    hdus.append(_distance_bins_hdu(grid))
    hdus.append(_provenance_hdu(prov))
    with atomic_path(path, overwrite) as tmp:
        fits.HDUList(hdus).writeto(tmp)
    return Path(path)


#: Columns of the ``RELIABLE_DIST`` table: each pixel's nearest and farthest star, pc
_NEAR_FAR = ("D_MIN", "D_MAX")


def _table_names(summary: SummaryField, levels: np.ndarray | None = None) -> list[str]:
    """HDU names of a summary: ``DENSITY_MEAN``, or ``DENSITY_P{q}`` for each percentile level ``q`` (0-100)."""
    if not summary.per_level:
        return [summary.name.upper()]
    prefix = summary.name.removesuffix("_percentiles").upper()
    return [f"{prefix}_P{level:g}" for level in np.asarray(levels)]


def read_healpix(path: PathType) -> HealpixPosteriorMap:
    """Read a file written by :func:`write_healpix`.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    HealpixPosteriorMap
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
            summary.name: np.stack([cube(name) for name in _table_names(summary, levels)])
            if summary.per_level
            else cube(_table_names(summary)[0])
            for summary in SUMMARIES
        }
        meta = prov["meta"] if "meta" in prov else _meta_from_header(hdul[0].header, prov)
        coverage = cube("COVERAGE").astype(bool) if "COVERAGE" in hdul else None
        reliable = None
        if "RELIABLE_DIST" in hdul:
            reliable = np.stack([_native(hdul["RELIABLE_DIST"].data[n]).astype(float) for n in _NEAR_FAR])
    return HealpixPosteriorMap(
        nside=nside,
        order=order,
        pixels=pixels,
        d_edges=d_edges,
        ghost_cells=ghost_cells,
        percentiles=levels,
        meta=meta,
        coverage=coverage,
        reliable_distance=reliable,
        **arrays,
    )
