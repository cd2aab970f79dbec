"""Dust-emission maps of others read for dustgp.emission: images with a WCS and HEALPix tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from dustgp.io.emission_maps import read_emission
from dustgp.io.fits_cube import celestial_wcs
from random_maps import GRIDS


def test_read_emission(tmp_path: Path) -> None:
    header = celestial_wcs(GRIDS["plain"]).to_header()
    image = fits.PrimaryHDU(np.arange(12.0).reshape(3, 4), header=header)
    image.writeto(tmp_path / "img.fits")
    hdu = read_emission(tmp_path / "img.fits")
    np.testing.assert_array_equal(hdu.data, image.data)
    table = fits.BinTableHDU.from_columns([fits.Column(name="I", format="E", array=np.ones(12))])
    table.header["PIXTYPE"], table.header["ORDERING"], table.header["NSIDE"] = "HEALPIX", "RING", 1
    fits.HDUList([fits.PrimaryHDU(), table]).writeto(tmp_path / "hp.fits")
    hp = read_emission(tmp_path / "hp.fits")
    assert isinstance(hp, fits.BinTableHDU)
    assert hp.header["NSIDE"] == 1


def test_a_file_without_data_is_refused(tmp_path: Path) -> None:
    fits.HDUList([fits.PrimaryHDU()]).writeto(tmp_path / "empty.fits")
    with pytest.raises(ValueError, match=r"empty.fits: no HDU holds data"):
        read_emission(tmp_path / "empty.fits")
