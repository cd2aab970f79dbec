"""Tests of dustgp.catalog.columns: the column mapping, percentile pairs, parallax columns and missing columns."""

from __future__ import annotations

import astropy.units as u
import numpy as np
import pytest

from catalog_tables import SEED, make_table
from dustgp.catalog import Catalog, CatalogError, parallax_distance_percentiles


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(SEED)


def test_percentile_pairs_give_half_the_68_percent_width(rng):
    table = make_table(rng, units=False)
    table["A_p16"] = table["A0"] - rng.uniform(0.01, 0.1, len(table))
    table["A_p84"] = table["A0"] + rng.uniform(0.01, 0.3, len(table))
    table["d_p16"] = table["distance"] - 20.0
    table["d_p84"] = table["distance"] + 60.0
    catalog = Catalog.from_table(
        table, extinction_err=("A_p16", "A_p84"), distance_err=("d_p16", "d_p84"), inflate=False
    )
    np.testing.assert_allclose(catalog.extinction_err_observed, (table["A_p84"] - table["A_p16"]) / 2)
    np.testing.assert_allclose(catalog.distance_err, 40.0)


def test_missing_column_lists_available(rng):
    table = make_table(rng)
    with pytest.raises(CatalogError, match=r"missing column 'dist50'.*available columns: 'l', 'b', 'distanc"):
        Catalog.from_table(table, distance="dist50")
    with pytest.raises(CatalogError, match=r"missing columns 'p16', 'p84'"):
        Catalog.from_table(table, extinction_err=("p16", "p84"))


def test_parallax_gives_the_median_of_its_distance_posterior(rng):
    table = make_table(rng, units=False)
    table["plx"] = rng.uniform(1.0, 10.0, len(table)) * u.mas
    table["plx_err"] = 0.05 * table["plx"]
    catalog = Catalog.from_table(table, parallax="plx", parallax_err="plx_err", inflate=False)
    plx, err = np.asarray(table["plx"]), np.asarray(table["plx_err"])
    p16, p50, p84 = parallax_distance_percentiles(plx, err).T
    np.testing.assert_allclose(catalog.distance, p50)
    np.testing.assert_allclose(catalog.distance_err, (p84 - p16) / 2)
    np.testing.assert_allclose(catalog.parallax, plx)
    np.testing.assert_allclose(catalog.parallax_err, err)
    # the same in arcsec; a parallax without an error is 1000/parallax, bare numbers taken as mas
    table["plx_arcsec"] = table["plx"].quantity.to(u.arcsec)
    table["plx_err_arcsec"] = table["plx_err"].quantity.to(u.arcsec)
    in_arcsec = Catalog.from_table(table, parallax="plx_arcsec", parallax_err="plx_err_arcsec", inflate=False)
    np.testing.assert_allclose(in_arcsec.distance, p50, rtol=1e-9)
    np.testing.assert_allclose(in_arcsec.parallax, plx, rtol=1e-12)
    table["plx_bare"] = plx
    for name in ("plx_arcsec", "plx_bare"):
        alone = Catalog.from_table(table, parallax=name)
        np.testing.assert_allclose(alone.distance, 1000.0 / plx)
        assert alone.parallax is None
        assert alone.distance_err is None


def test_parallax_options_are_checked(rng):
    table = make_table(rng, units=False)
    table["plx"] = 2.0
    with pytest.raises(CatalogError, match="parallax_err given without parallax"):
        Catalog.from_table(table, parallax_err="plx")
    with pytest.raises(CatalogError, match="either distance_err or parallax"):
        Catalog.from_table(table, parallax="plx", distance_err="distance_err")
