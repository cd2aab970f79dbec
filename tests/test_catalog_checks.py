"""Tests of dustgp.catalog.checks: the plausibility limits and the messages that name column, expectation and rows."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from catalog_tables import SEED, make_table
from dustgp.catalog import Catalog, CatalogError


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(SEED)


@pytest.mark.parametrize(
    ("column", "value", "reason"),
    [
        ("A0", 1e6, r"\|extinction\| <= 30 mag \(larger is implausible"),  # e.g. millimag read as mag
        ("A0", -9999.0, r"\|extinction\| <= 30 mag"),  # a sentinel
        ("A0_err", 1e-12, r"extinction uncertainty >= 1e-06 mag"),  # weights 1/sigma² of 1e24
        ("distance", 2e5, r"distance <= 100 kpc"),
    ],
)
def test_implausible_values_are_bad_rows(rng, column, value, reason):
    table = make_table(rng, units=False)
    table[column][7] = value
    with pytest.raises(CatalogError, match=rf"column '{column}': expected [^\n]*{reason}[^\n]* 1 row: 7$"):
        Catalog.from_table(table)
    catalog = Catalog.from_table(table, on_bad="drop")
    np.testing.assert_array_equal(catalog.dropped_rows, [7])


def test_implausible_rows_are_dropped_and_reported_like_nan_rows(rng, caplog):
    table = make_table(rng, units=False)
    table["A0"][[4, 9]] = [1e6, np.nan]
    table["A0_err"][12] = 1e-9
    table["distance"][20] = 1e7
    with caplog.at_level(logging.WARNING, logger="dustgp.catalog"):
        catalog = Catalog.from_table(table, on_bad="drop")
    np.testing.assert_array_equal(catalog.dropped_rows, [4, 9, 12, 20])
    assert "dropped 4 of 50 input rows" in caplog.text
    assert "1 with NaN, inf or masked in column 'A0'" in caplog.text
    assert "1 with |extinction| > 30 mag in column 'A0'" in caplog.text
    assert "1 with uncertainty < 1e-06 mag in column 'A0_err'" in caplog.text
    assert "1 with distance > 100 kpc in column 'distance'" in caplog.text


def test_parallax_of_a_star_beyond_100_kpc_is_a_bad_row(rng):
    table = make_table(rng, units=False)
    table["plx"] = rng.uniform(1.0, 10.0, len(table))
    table["plx"][5] = 1e-3  # mas: 1 Mpc
    with pytest.raises(CatalogError, match=r"'plx': expected parallax >= 0.01 mas .* 1 row: 5$"):
        Catalog.from_table(table, parallax="plx")


def test_core_constructor_refuses_implausible_values():
    with pytest.raises(CatalogError, match=r"column extinction: expected \|extinction\| <= 30 mag.* 1 row: 1"):
        Catalog([10.0, 20.0], [0.0, 1.0], [100.0, 200.0], [0.1, 1e6], [0.1, 0.1])
    with pytest.raises(CatalogError, match=r"column extinction_err: expected extinction uncertainty >= 1e-06 mag"):
        Catalog([10.0, 20.0], [0.0, 1.0], [100.0, 200.0], [0.1, 0.2], [1e-12, 0.1])
    with pytest.raises(CatalogError, match=r"column distance: expected distance <= 100 kpc.* 1 row: 0"):
        Catalog([10.0, 20.0], [0.0, 1.0], [1e6, 200.0], [0.1, 0.2], [0.1, 0.1])


def test_error_lists_ten_rows_then_the_count(rng):
    table = make_table(rng, units=False)
    table["distance"][3:28] = np.nan
    with pytest.raises(CatalogError) as info:
        Catalog.from_table(table)
    message = str(info.value)
    assert "25 rows: 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, ... and 15 more" in message
    assert "25 of 50 rows are not usable" in message
    assert "on_bad='drop'" in message
