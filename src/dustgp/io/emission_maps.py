"""Dust-emission maps of others (Planck's HEALPix tables, images with a celestial WCS), read for
:mod:`dustgp.emission`."""

from __future__ import annotations

import numpy as np
from astropy.io import fits

from ._common import PathType

__all__ = ["read_emission"]


def read_emission(
    path: PathType, *, hdu: int | str | None = None
) -> fits.ImageHDU | fits.PrimaryHDU | fits.BinTableHDU:
    """Read a dust-emission map (HEALPix table or image with WCS) into memory, for :mod:`dustgp.emission`.

    Parameters
    ----------
    path : str or os.PathLike
        A FITS file: a HEALPix binary table (``PIXTYPE = 'HEALPIX'``, as Planck's maps) or an image with a
        celestial WCS.
    hdu : int or str, optional
        Which HDU; default the first HEALPix table, else the first HDU holding data.

    Returns
    -------
    astropy.io.fits.BinTableHDU, ImageHDU or PrimaryHDU
        An in-memory copy (the file is closed).
    """
    with fits.open(path, memmap=False) as hdul:
        if hdu is None:
            tables = [h for h in hdul if str(h.header.get("PIXTYPE", "")).upper() == "HEALPIX"]
            with_data = [h for h in hdul if h.data is not None and h.size > 0]
            if not tables and not with_data:
                raise ValueError(f"{path}: no HDU holds data")
            chosen = tables[0] if tables else with_data[0]
        else:
            chosen = hdul[hdu]
        if isinstance(chosen, fits.BinTableHDU):
            return fits.BinTableHDU(data=chosen.data.copy(), header=chosen.header.copy())
        data = np.array(chosen.data)
        if isinstance(chosen, fits.PrimaryHDU):
            return fits.PrimaryHDU(data=data, header=chosen.header.copy())
        return fits.ImageHDU(data=data, header=chosen.header.copy())
