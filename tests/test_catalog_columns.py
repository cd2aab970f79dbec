"""Tests of dustgp.catalog.columns: the column mapping, percentile pairs, parallax columns and missing columns."""

from __future__ import annotations

import astropy.units as u
import numpy as np
import pytest

from catalog_tables import SEED, make_table
from dustgp.catalog import Catalog, CatalogError


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


def test_parallax_gives_distance_and_first_order_sigma(rng):
    table = make_table(rng, units=False)
    table["plx"] = rng.uniform(1.0, 10.0, len(table)) * u.mas
    table["plx_err"] = 0.05 * table["plx"]
    catalog = Catalog.from_table(table, parallax="plx", parallax_err="plx_err", inflate=False)
    plx = np.asarray(table["plx"])
    np.testing.assert_allclose(catalog.distance, 1000.0 / plx)
    np.testing.assert_allclose(catalog.distance_err, 1000.0 * np.asarray(table["plx_err"]) / plx**2)
    # the same in arcsec, and bare numbers taken as mas
    table["plx_arcsec"] = table["plx"].quantity.to(u.arcsec)
    table["plx_bare"] = np.asarray(table["plx"])
    for name in ("plx_arcsec", "plx_bare"):
        np.testing.assert_allclose(Catalog.from_table(table, parallax=name).distance, 1000.0 / plx)


def test_parallax_options_are_checked(rng):
    table = make_table(rng, units=False)
    table["plx"] = 2.0
    with pytest.raises(CatalogError, match="parallax_err given without parallax"):
        Catalog.from_table(table, parallax_err="plx")
    with pytest.raises(CatalogError, match="either distance_err or parallax"):
        Catalog.from_table(table, parallax="plx", distance_err="distance_err")
