"""Tests of dustgp.catalog.units: the units rule (converted, bare = internal units, distance_unit) and its messages."""

from __future__ import annotations

import logging

import astropy.units as u
import numpy as np
import pytest
from astropy.table import QTable, Table

from catalog_tables import SEED, assert_same_stars, make_table
from dustgp.catalog import Catalog, CatalogError


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(SEED)


def test_units_are_converted(rng):
    table = make_table(rng)
    converted = Table()
    converted["l"] = table["l"].quantity.to(u.rad)
    converted["b"] = table["b"].quantity.to(u.rad)
    converted["distance"] = table["distance"].quantity.to(u.kpc)
    converted["distance_err"] = table["distance_err"].quantity.to(u.kpc)
    converted["A0"] = table["A0"].quantity.to(u.mmag)
    converted["A0_err"] = table["A0_err"].quantity
    catalog = Catalog.from_table(converted, distance_err="distance_err", inflate=False)
    assert_same_stars(catalog, table)
    np.testing.assert_allclose(catalog.distance_err, table["distance_err"], rtol=1e-12)


def test_qtable_and_quantities_are_accepted(rng):
    table = make_table(rng)
    catalog = Catalog.from_table(QTable(table), inflate=False)
    assert_same_stars(catalog, table)
    from_arrays = Catalog.from_arrays(
        table["l"].quantity.to(u.rad),
        table["b"].quantity,
        table["distance"].quantity.to(u.kpc),
        table["A0"].quantity,
        table["A0_err"].quantity,
        distance_err=table["distance_err"].quantity.to(u.lyr),
        inflate=False,
    )
    assert_same_stars(from_arrays, table)
    np.testing.assert_allclose(from_arrays.distance_err, table["distance_err"], rtol=1e-12)


def test_bare_numbers_are_internal_units(rng):
    table = make_table(rng, units=False)
    catalog = Catalog.from_arrays(
        np.asarray(table["l"]), list(table["b"]), table["distance"], table["A0"], table["A0_err"]
    )
    assert_same_stars(catalog, table)


@pytest.mark.parametrize(
    ("column", "unit", "expected"),
    [("distance", u.mag, "pc"), ("l", u.pc, "deg"), ("A0", u.kpc, "mag"), ("A0_err", u.deg, "mag")],
)
def test_incompatible_unit_names_column_and_units(rng, column, unit, expected):
    table = make_table(rng)
    table[column].unit = unit
    with pytest.raises(CatalogError, match=rf"'{column}'.*'{unit}'.*{expected}"):
        Catalog.from_table(table)


def test_incompatible_quantity_in_from_arrays(rng):
    table = make_table(rng)
    with pytest.raises(CatalogError, match=r"'distance'.*'mag'.*pc"):
        Catalog.from_arrays(table["l"], table["b"], table["distance"].value * u.mag, table["A0"], table["A0_err"])


def test_bare_distances_that_look_like_kpc_get_a_warning(rng, caplog):
    table = make_table(rng, units=False)
    table["distance"] = table["distance"] / 1000.0  # kpc, without a unit
    with caplog.at_level(logging.WARNING, logger="dustgp.catalog"):
        catalog = Catalog.from_table(table)
    np.testing.assert_allclose(catalog.distance, table["distance"])  # still the documented unit, pc
    assert "column 'distance' has no unit and is read as pc, but all 50 distances are below 30 pc" in caplog.text
    assert "looks like kpc; pass distance_unit='kpc'" in caplog.text
    for unit, factor in (("kpc", 1000.0), ("pc", 1.0)):  # stating the unit, either way, silences it
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="dustgp.catalog"):
            stated = Catalog.from_table(table, distance_unit=unit)
        np.testing.assert_allclose(stated.distance, factor * table["distance"], rtol=1e-12)
        assert caplog.text == ""
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="dustgp.catalog"):
        Catalog.from_table(table, distance="distance_err")  # 10-100 pc: not all below 30 pc, no warning
    assert "looks like kpc" not in caplog.text


def test_distance_unit_applies_to_every_unitless_distance_column(rng, tmp_path):
    table = make_table(rng, units=False)
    kpc = table.copy()
    for name in ("distance", "distance_err"):
        kpc[name] = table[name] / 1000.0
    catalog = Catalog.from_table(kpc, distance_err="distance_err", distance_unit="kpc", inflate=False)
    np.testing.assert_allclose(catalog.distance, table["distance"], rtol=1e-12)
    np.testing.assert_allclose(catalog.distance_err, table["distance_err"], rtol=1e-12)
    kpc.write(tmp_path / "stars.csv")
    read = Catalog.read(tmp_path / "stars.csv", distance_unit=u.kpc, inflate=False)
    np.testing.assert_allclose(read.distance, table["distance"], rtol=1e-9)
    arrays = Catalog.from_arrays(
        kpc["l"], kpc["b"], kpc["distance"], kpc["A0"], kpc["A0_err"], distance_err=kpc["distance_err"],
        distance_unit="kpc", inflate=False,
    )  # fmt: skip
    np.testing.assert_allclose(arrays.distance_err, table["distance_err"], rtol=1e-12)


def test_stated_distance_unit_is_checked(rng):
    table = make_table(rng)  # distance has unit pc
    with pytest.raises(CatalogError, match=r"column 'distance': its unit 'pc' contradicts the stated unit 'kpc'"):
        Catalog.from_table(table, distance_unit="kpc")
    with pytest.raises(CatalogError, match=r"distance_unit: expected a unit of length such as pc, got 'mag'"):
        Catalog.from_table(table, distance_unit="mag")
    with pytest.raises(CatalogError, match=r"distance_unit: expected a unit of length such as pc, got 'parsecs'"):
        Catalog.from_arrays([1.0], [0.0], [1.0], [0.1], [0.1], distance_unit="parsecs")


def test_non_numeric_column(rng):
    table = make_table(rng)
    table["name"] = ["star"] * len(table)
    with pytest.raises(CatalogError, match=r"'name'.*numeric"):
        Catalog.from_table(table, extinction="name")
