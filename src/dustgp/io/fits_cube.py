"""FITS cubes of a :class:`~dustgp.posterior_map.PosteriorMap`, with a Galactic WCS; lossless through :func:`read_fits`.

Images with a celestial WCS (``GLON-CAR``/``GLAT-CAR``, longitude increasing to the left, :func:`celestial_wcs`)
and a distance axis; see :func:`write_fits` for the HDU list.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from .._atomic import atomic_path
from ..grid import Grid
from ..posterior_map import DENSITY_UNIT, EXTINCTION_UNIT, SUMMARIES, PosteriorMap, SummaryField
from ._common import PathType, _distance_bins_hdu, _grid_from_edges, _native, _reading
from .provenance import _meta_from_header, _primary_cards, _provenance, _provenance_hdu, _read_provenance

__all__ = ["UNIFORM_RTOL", "celestial_wcs", "read_fits", "write_fits"]

#: Relative tolerance under which cell spacings count as uniform (linear WCS axes).
UNIFORM_RTOL = 1e-9


def _uniform_step(edges: np.ndarray) -> float | None:
    """The spacing of ``edges`` when it is uniform (to UNIFORM_RTOL), else None."""
    steps = np.diff(edges)
    step = (edges[-1] - edges[0]) / steps.size
    return float(step) if np.allclose(steps, step, rtol=UNIFORM_RTOL, atol=0.0) else None


# ----- WCS --------------------------------------------------------------------------------------------------
def celestial_wcs(grid: Grid) -> WCS:
    """The 2D Galactic WCS of a grid's (l, b) pixels, with longitude increasing to the left.

    Pixel ``(x, y)`` (0-based) is longitude cell ``n_l - 1 - x`` (images store the l axis reversed) and
    latitude cell ``y``. Plate carrée (``CAR``) with the reference point on the equator (``CRVAL2 = 0``) is
    exactly linear in (l, b); ``CRVAL1`` is the longitude of the middle of the map, in [0, 360).

    Parameters
    ----------
    grid : Grid
        A grid with uniform l and b spacing.

    Returns
    -------
    astropy.wcs.WCS
        ``CTYPE = ('GLON-CAR', 'GLAT-CAR')``, ``CDELT1 < 0``, ``CUNIT = deg``.

    Raises
    ------
    ValueError
        If the l or b spacing is not uniform (a FITS WCS cannot describe it; use NetCDF).
    """
    dl, db = _uniform_step(grid.l_edges), _uniform_step(grid.b_edges)
    if dl is None or db is None:
        raise ValueError("celestial_wcs: expected uniform l and b spacing for a CAR WCS; use NetCDF instead")
    wcs = WCS(naxis=2)
    first_l = 0.5 * (grid.l_edges[-1] + grid.l_edges[-2])  # the largest longitude is pixel 1
    mid_l = 0.5 * (grid.l_edges[0] + grid.l_edges[-1])
    first_b = 0.5 * (grid.b_edges[0] + grid.b_edges[1])
    wcs.wcs.ctype = ["GLON-CAR", "GLAT-CAR"]
    wcs.wcs.cunit = ["deg", "deg"]
    wcs.wcs.cdelt = [-dl, db]
    # The reference longitude is the middle of the map, so that native longitudes stay within ±180°: with the
    # reference on an edge, a map wider than 180° wraps inside the projection and WCSAxes loses its labels.
    wcs.wcs.crval = [mid_l % 360.0, 0.0]
    # l = CRVAL1 + CDELT1 (p - CRPIX1): pixel 1 holds first_l; b = CDELT2 (p - CRPIX2) with CRVAL2 = 0
    wcs.wcs.crpix = [1.0 + (first_l - mid_l) / dl, 1.0 - first_b / db]
    wcs.wcs.set()
    wcs.pixel_shape = (grid.n_l, grid.n_b)
    return wcs


def _cube_header(grid: Grid, extra_axis: str | None, tab: bool) -> fits.Header:
    """WCS cards of a ([k,] region distance, b, l) cube; l reversed as in :func:`celestial_wcs`.

    Written card by card rather than through ``astropy.wcs``, which cannot serialise a ``-TAB`` axis without
    its table.
    """
    sky = celestial_wcs(grid)
    region = grid.d_edges[grid.ghost_cells :]
    if tab:
        # index axis: the intermediate coordinate is the 1-based plane number, looked up in DISTANCE_TAB
        dist = ("DIST-TAB", 1.0, 1.0, 1.0)
    else:
        dist = ("DIST", 0.5 * (region[0] + region[1]), 1.0, (region[-1] - region[0]) / (region.size - 1))
    axes = [
        (sky.wcs.ctype[0], "deg", sky.wcs.crval[0], sky.wcs.crpix[0], sky.wcs.cdelt[0]),
        (sky.wcs.ctype[1], "deg", sky.wcs.crval[1], sky.wcs.crpix[1], sky.wcs.cdelt[1]),
        (dist[0], "pc", dist[1], dist[2], dist[3]),
    ]
    if extra_axis is not None:
        axes.append((extra_axis, "", 1.0, 1.0, 1.0))
    header = fits.Header()
    header["WCSAXES"] = len(axes)
    for i, (ctype, cunit, crval, crpix, cdelt) in enumerate(axes, start=1):
        header[f"CTYPE{i}"] = ctype
        if cunit:
            header[f"CUNIT{i}"] = cunit
        header[f"CRVAL{i}"] = float(crval)
        header[f"CRPIX{i}"] = float(crpix)
        header[f"CDELT{i}"] = float(cdelt)
    header["LONPOLE"] = (0.0, "native longitude of celestial pole")
    if tab:
        header["PS3_0"] = ("DISTANCE_TAB", "-TAB: EXTNAME of the lookup table")
        header["PS3_1"] = ("COORDS", "-TAB: column of distances (pc)")
        header["PS3_2"] = ("INDEX", "-TAB: column of 1-based plane numbers")
        header["PV3_3"] = (1, "-TAB: axis number in the coordinate array")
    return header


def _hdu_name(summary: SummaryField) -> str:
    """Name of a summary's image HDU and ``FOREGROUND_CELLS`` column: ``density_percentiles`` -> ``DENSITY_PCT``."""
    return summary.name.replace("percentiles", "pct").upper()


def _fits_column(name: str, arrays: np.ndarray, unit: str | None = None) -> fits.Column:
    """A binary-table column whose cells are arrays: ``arrays`` has shape (n_rows, *cell_shape)."""
    arrays = np.ascontiguousarray(arrays)
    if arrays.dtype.newbyteorder("=") not in (np.dtype(np.float32), np.dtype(np.float64)):
        arrays = arrays.astype(np.float64)
    letter = "E" if arrays.dtype.itemsize == 4 else "D"
    cell = arrays.shape[1:]
    repeat = int(np.prod(cell)) if cell else 1
    dim = "(" + ",".join(str(n) for n in cell[::-1]) + ")" if len(cell) > 1 else None
    return fits.Column(name=name, format=f"{repeat}{letter}", dim=dim, unit=unit, array=arrays)


def write_fits(dmap: PosteriorMap, path: PathType, *, overwrite: bool = False, samples: bool = True) -> Path:
    """Write the map as FITS images with a Galactic WCS; lossless through :func:`read_fits`.

    Parameters
    ----------
    dmap : PosteriorMap
        A map whose l and b spacing is uniform (a FITS celestial WCS needs it).
    path : str or os.PathLike
        Target file (``.fits``, ``.fits.gz`` for gzip).
    overwrite : bool
        Replace an existing file.
    samples : bool
        Include the joint posterior samples when the map has them.

    Returns
    -------
    pathlib.Path

    Notes
    -----
    Every image is stored with the longitude axis *reversed* (pixel 1 holds the largest l, ``CDELT1 < 0``) so
    that longitude increases to the left in any FITS viewer. FITS axis order is (l, b, distance[, k]), i.e.
    numpy order (k, distance, b, l). The image cubes hold only the *region* cells (``d_min .. d_max``): their
    distance axis is linear (``CTYPE3 = 'DIST'``, pc, centres of the cells) when the region spacing is
    uniform, else a ``DIST-TAB`` lookup axis (Greisen et al. 2006) into the ``DISTANCE_TAB`` table (astropy
    then needs ``WCS(header, fobj=hdulist)``). The foreground ghost cells (0 .. d_min), whose spacing differs,
    are kept in the ``FOREGROUND_CELLS`` table.
    HDUs, in order:

    ``PRIMARY``
        Density posterior mean, mag/pc. Provenance cards ``DUSTGPV``, ``SEED``, ``DATE``, ``REFERENC``.
    ``DENSITY_STD``, ``EXTINCTION_MEAN``, ``EXTINCTION_STD``
        Same shape. Extinction (mag) is integrated from the Sun to the *far* edge of each cell (foreground
        included).
    ``DENSITY_PCT``, ``EXTINCTION_PCT``
        4D, axis 4 (``PCTINDEX``) runs over the levels in header cards ``PCT1`` .. ``PCTn``.
    ``DENSITY_SAMPLES`` (optional)
        4D, axis 4 (``SAMPLE``) over the joint posterior samples, mag/pc.
    ``FOREGROUND_EXTINCTION`` (with ghost cells)
        2D image, posterior mean extinction to ``d_min``, mag.
    ``FOREGROUND_CELLS`` (with ghost cells)
        Binary table, one row per ghost cell: ``D_NEAR``, ``D_FAR`` (pc) and every array of that cell, in the
        image orientation (columns ``DENSITY_MEAN`` .. ``EXTINCTION_PCT``, ``DENSITY_SAMPLES``).
    ``COVERAGE`` (when the map knows it)
        Cube like the others, 1 where the stars constrain the cell, 0 where the map is the prior's (its ghost
        cells in the ``COVERAGE`` column of ``FOREGROUND_CELLS``).
    ``RELIABLE_DIST`` (when the map knows it)
        (2, b, l) image, pc: nearest and farthest star of each column (NaN without stars).
    ``DISTANCE_BINS``
        Binary table of all distance cells: ``INDEX``, ``D_NEAR``, ``D_FAR``, ``D_CENTER`` (pc), ``GHOST``.
    ``DISTANCE_TAB`` (non-uniform region spacing only)
        The ``-TAB`` lookup: ``COORDS`` (region cell centres, pc) and ``INDEX``.
    ``PROVENANCE``
        Binary table of JSON documents: ``meta`` (the whole meta dict), ``config``, ``hyperparameters``,
        ``grid`` (exact edges).
    """
    grid = dmap.grid
    g = grid.ghost_cells
    if grid.n_d - g < 1:
        raise ValueError("write_fits: the map has no region cells beyond the ghost cells")
    tab = _uniform_step(grid.d_edges[g:]) is None
    prov = _provenance(dmap)
    flip = np.s_[..., ::-1]  # l reversed: the largest longitude first

    def image(
        data: np.ndarray, name: str, unit: str, extra: str | None = None, primary: bool = False
    ) -> fits.ImageHDU | fits.PrimaryHDU:
        header = _cube_header(grid, extra, tab)
        header["BUNIT"] = unit
        cls = fits.PrimaryHDU if primary else fits.ImageHDU
        hdu = cls(data=np.ascontiguousarray(data[..., g:, :, :][flip]), header=header)
        if not primary:
            hdu.header["EXTNAME"] = name
        return hdu

    first, *others = SUMMARIES  # the density mean is the primary image, the other summaries follow in order
    primary = image(getattr(dmap, first.name), _hdu_name(first), first.unit, primary=True)
    _primary_cards(primary.header, prov)
    primary.header["GHOSTS"] = (g, "ghost cells: in FOREGROUND_CELLS, not in cubes")
    primary.header["COMMENT"] = "Cubes hold the region cells d_min..d_max; l reversed (increases left)."
    primary.header["COMMENT"] = "Extinction cubes: from the Sun to the far edge of each cell."
    hdus: list[Any] = [primary]
    for summary in others:
        hdu = image(
            getattr(dmap, summary.name), _hdu_name(summary), summary.unit, "PCTINDEX" if summary.per_level else None
        )
        if summary.per_level:
            for k, level in enumerate(dmap.percentiles, start=1):
                hdu.header[f"PCT{k}"] = (float(level), f"percentile level of plane {k}, axis 4")
        hdus.append(hdu)
    keep_samples = samples and dmap.density_samples is not None
    if keep_samples:
        hdus.append(image(dmap.density_samples, "DENSITY_SAMPLES", DENSITY_UNIT, "SAMPLE"))
    if dmap.coverage is not None:
        hdu = image(dmap.coverage.astype(np.uint8), "COVERAGE", "")
        hdu.header["COMMENT"] = "1: cell constrained by stars (no farther than the farthest star of its column);"
        hdu.header["COMMENT"] = "0: prior only (beyond the farthest star, no star in the column, off the data)."
        hdus.append(hdu)
    if dmap.reliable_distance is not None:
        reliable = fits.ImageHDU(
            data=np.ascontiguousarray(dmap.reliable_distance[flip]),
            header=celestial_wcs(grid).to_header(),
            name="RELIABLE_DIST",
        )
        reliable.header["BUNIT"] = "pc"
        reliable.header["COMMENT"] = "Plane 1: nearest star of each column, plane 2: farthest (NaN: no star)."
        hdus.append(reliable)
    if g:
        fg = fits.ImageHDU(
            data=np.ascontiguousarray(dmap.extinction_mean[g - 1][flip]),
            header=celestial_wcs(grid).to_header(),
            name="FOREGROUND_EXTINCTION",
        )
        fg.header["BUNIT"] = EXTINCTION_UNIT
        fg.header["COMMENT"] = "Posterior mean extinction from the Sun to d_min (through the ghost cells)."
        hdus.append(fg)
        columns = [
            fits.Column(name="D_NEAR", format="D", unit="pc", array=grid.d_edges[:g]),
            fits.Column(name="D_FAR", format="D", unit="pc", array=grid.d_edges[1 : g + 1]),
        ]
        for summary in SUMMARIES:
            data = getattr(dmap, summary.name)
            cells = np.moveaxis(data[:, :g], 1, 0) if summary.per_level else data[:g]
            columns.append(_fits_column(_hdu_name(summary), cells[flip], summary.unit))
        if keep_samples:
            cells = np.moveaxis(dmap.density_samples[:, :g], 1, 0)  # type: ignore[index]
            columns.append(_fits_column("DENSITY_SAMPLES", cells[flip], DENSITY_UNIT))
        if dmap.coverage is not None:
            columns.append(_fits_column("COVERAGE", dmap.coverage[:g].astype(np.float32)[flip]))
        table = fits.BinTableHDU.from_columns(columns, name="FOREGROUND_CELLS")
        table.header["COMMENT"] = "One row per ghost cell; arrays (b, l), l reversed as in the images."
        hdus.append(table)
    hdus.append(_distance_bins_hdu(grid))
    if tab:
        region_centres = grid.d_centers[g:]
        k = region_centres.size
        hdus.append(
            fits.BinTableHDU.from_columns(
                [
                    fits.Column(
                        name="COORDS",
                        format=f"{k}D",
                        dim=f"(1,{k})",
                        unit="pc",
                        array=region_centres.reshape(1, k, 1),
                    ),
                    fits.Column(name="INDEX", format=f"{k}D", array=np.arange(1.0, k + 1).reshape(1, k)),
                ],
                name="DISTANCE_TAB",
            )
        )
    hdus.append(_provenance_hdu(prov))
    with atomic_path(path, overwrite) as tmp:
        fits.HDUList(hdus).writeto(tmp)
    return Path(path)


def read_fits(path: PathType) -> PosteriorMap:
    """Read a map written by :func:`write_fits`, ghost cells and all.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    PosteriorMap
        Exactly the map that was written.

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    MapFileError
        The file is damaged, of another kind, or misses a part of a dustgp map (the message names it).
    """
    with _reading(path, "FITS map"), fits.open(path, memmap=False) as hdul:
        prov = _read_provenance(hdul)
        bins = hdul["DISTANCE_BINS"]
        ghost_cells = int(bins.header["GHOSTS"])
        d_edges = np.append(_native(bins.data["D_NEAR"]), _native(bins.data["D_FAR"])[-1:])
        if "grid" in prov:
            spec = prov["grid"]
            l_edges, b_edges = np.asarray(spec["l_edges"], float), np.asarray(spec["b_edges"], float)
        else:  # a file without provenance: rebuild the sky edges from the WCS
            l_edges, b_edges = _edges_from_wcs(hdul[0].header)
        grid = _grid_from_edges(l_edges, b_edges, d_edges, ghost_cells)
        g = ghost_cells
        fg = hdul["FOREGROUND_CELLS"].data if g else None

        def cube(hdu_name: str | int, column: str) -> np.ndarray:
            region = _native(hdul[hdu_name].data)[..., ::-1]
            if not g:
                return region
            cells = _native(fg[column])[..., ::-1]  # (g, [k,] b, l)
            if region.ndim == 4:
                cells = np.moveaxis(cells, 0, 1)
            return np.concatenate([cells, region], axis=region.ndim - 3)

        # the primary HDU holds the first summary (the density mean); FOREGROUND_CELLS columns share the HDU names
        arrays = {s.name: cube(_hdu_name(s) if k else 0, _hdu_name(s)) for k, s in enumerate(SUMMARIES)}
        header = hdul["DENSITY_PCT"].header
        percentiles = np.array([header[f"PCT{k}"] for k in range(1, header["NAXIS4"] + 1)], dtype=float)
        samples = cube("DENSITY_SAMPLES", "DENSITY_SAMPLES") if "DENSITY_SAMPLES" in hdul else None
        coverage = cube("COVERAGE", "COVERAGE").astype(bool) if "COVERAGE" in hdul else None
        reliable = _native(hdul["RELIABLE_DIST"].data)[..., ::-1] if "RELIABLE_DIST" in hdul else None
        meta = prov["meta"] if "meta" in prov else _meta_from_header(hdul[0].header, prov)
    return PosteriorMap(
        grid=grid,
        percentiles=percentiles,
        density_samples=samples,
        meta=meta,
        coverage=coverage,
        reliable_distance=None if reliable is None else np.ascontiguousarray(reliable),
        **{k: np.ascontiguousarray(v) for k, v in arrays.items()},
    )


def _edges_from_wcs(header: fits.Header) -> tuple[np.ndarray, np.ndarray]:
    """Longitude (unwrapped, increasing) and latitude edges of a CAR image written by :func:`write_fits`."""
    wcs = WCS(header).celestial
    n_l, n_b = header["NAXIS1"], header["NAXIS2"]
    x_edges = np.arange(n_l + 1) - 0.5  # 0-based pixel edges
    y_edges = np.arange(n_b + 1) - 0.5
    l_world, _ = wcs.pixel_to_world_values(x_edges, np.zeros_like(x_edges))
    _, b_world = wcs.pixel_to_world_values(np.zeros_like(y_edges), y_edges)
    l_world = np.asarray(l_world)[::-1]
    l_unwrapped = l_world[0] + np.cumsum(np.r_[0.0, np.diff(l_world) % 360.0])
    return l_unwrapped, np.asarray(b_world)
