"""Tests of dustgp.catalog.rows: bad rows raised or dropped, the uncertainty floor, duplicates and the options."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from astropy.table import MaskedColumn

from catalog_tables import SEED, make_table
from dustgp.catalog import Catalog, CatalogError


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(SEED)


def test_extinction_err_floor(rng):
    table = make_table(rng, units=False)
    table["A0_err"][:5] = 0.0
    table["A0_err"][5:10] = 0.01
    catalog = Catalog.from_table(table, extinction_err_floor=0.03)
    np.testing.assert_allclose(catalog.extinction_err_observed[:10], 0.03)
    np.testing.assert_allclose(catalog.extinction_err_observed[10:], np.maximum(table["A0_err"][10:], 0.03))


def test_non_positive_parallax_is_a_bad_row(rng):
    table = make_table(rng, units=False)
    table["plx"] = rng.uniform(1.0, 10.0, len(table))
    table["plx"][[3, 17]] = [0.0, -0.5]
    with pytest.raises(CatalogError, match=r"'plx': expected parallax > 0.* 2 rows: 3, 17"):
        Catalog.from_table(table, parallax="plx")
    catalog = Catalog.from_table(table, parallax="plx", on_bad="drop")
    np.testing.assert_array_equal(catalog.dropped_rows, [3, 17])


@pytest.mark.parametrize(
    ("column", "value", "reason"),
    [
        ("distance", np.nan, "finite"),
        ("A0", np.inf, "finite"),
        ("A0_err", 0.0, "> 0"),
        ("A0_err", -0.1, "> 0"),
        ("distance", -100.0, "distance > 0"),
        ("distance", 0.0, "distance > 0"),
        ("b", 91.0, r"\|b\| <= 90"),
        ("distance_err", -1.0, ">= 0"),
    ],
)
def test_bad_row_raises_naming_column_and_row(rng, column, value, reason):
    table = make_table(rng, units=False)
    table[column][7] = value
    with pytest.raises(CatalogError, match=rf"column '{column}': expected [^\n]*{reason}[^\n]* 1 row: 7$"):
        Catalog.from_table(table, distance_err="distance_err")


def test_duplicate_rows_get_a_warning_with_their_count(rng, caplog):
    table = make_table(rng, units=False)
    table.add_row(table[3])
    table.add_row(table[3])
    table.add_row(table[10])
    table["distance"][11] = table["distance"][12]  # one distance shared by two different stars is no duplicate
    with caplog.at_level(logging.WARNING, logger="dustgp.catalog"):
        catalog = Catalog.from_table(table)
    assert len(catalog) == 53  # kept: they may be repeated measurements the user wants
    assert "3 of 53 rows repeat another row's l, b, distance and extinction (rows 50, 51, 52)" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="dustgp.catalog"):
        Catalog.from_table(table[:50])
    assert "repeat" not in caplog.text


def test_drop_removes_exactly_the_bad_rows(rng, caplog):
    table = make_table(rng, units=False)
    table["distance"][[2, 30]] = [np.nan, -5.0]
    table["A0_err"][[2, 11]] = [0.0, -1.0]  # row 2 is bad twice
    table["A0"][5] = -0.3  # a negative extinction is a valid measurement
    with caplog.at_level(logging.WARNING, logger="dustgp.catalog"):
        catalog = Catalog.from_table(table, on_bad="drop", distance_err="distance_err")
    bad = [2, 11, 30]
    np.testing.assert_array_equal(catalog.dropped_rows, bad)
    keep = np.setdiff1d(np.arange(len(table)), bad)
    np.testing.assert_array_equal(catalog.row_index, keep)
    np.testing.assert_allclose(catalog.distance, table["distance"][keep])
    assert catalog.extinction[list(keep).index(5)] == pytest.approx(-0.3)
    message = caplog.text
    assert "dropped 3 of 50 input rows" in message
    assert "1 with NaN, inf or masked in column 'distance'" in message
    assert "2 with uncertainty <= 0 in column 'A0_err'" in message


def test_reversed_percentiles_are_bad_rows(rng):
    table = make_table(rng, units=False)
    table["A16"] = table["A0"] - 0.1
    table["A84"] = table["A0"] + 0.1
    table["A84"][4] = table["A16"][4] - 0.05
    table["A16"][9] = table["A84"][9]  # zero width: sigma = 0
    with pytest.raises(CatalogError) as info:
        Catalog.from_table(table, extinction_err=("A16", "A84"))
    lines = str(info.value).splitlines()
    assert any("'A16'/'A84': expected p84 >= p16" in line and line.endswith("1 row: 4") for line in lines)
    assert any("'A16'/'A84': expected extinction uncertainty > 0" in ln and ln.endswith("row: 9") for ln in lines)


def test_masked_values_are_bad_rows(rng):
    table = make_table(rng, units=False)
    table["A0"] = MaskedColumn(table["A0"], mask=np.arange(len(table)) == 6)
    with pytest.raises(CatalogError, match=r"'A0': expected finite values, got NaN, inf or masked in 1 row: 6$"):
        Catalog.from_table(table)


def test_all_bad_gives_no_valid_stars(rng):
    table = make_table(rng, n=4, units=False)
    table["distance"] = -1.0
    with pytest.raises(CatalogError, match="no valid stars"):
        Catalog.from_table(table, on_bad="drop")


def test_options_are_checked(rng):
    table = make_table(rng, units=False)
    with pytest.raises(ValueError, match="on_bad"):
        Catalog.from_table(table, on_bad="ignore")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="extinction_err_floor"):
        Catalog.from_table(table, extinction_err_floor=-1.0)
    with pytest.raises(CatalogError, match="expected arrays of one length"):
        Catalog.from_arrays([1.0, 2.0], [0.0, 0.0], [10.0, 20.0], [0.1], [0.1, 0.1])
