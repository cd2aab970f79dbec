"""Tests of dustgp.catalog: reading, units, bad rows, subsets and the distance-uncertainty inflation."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import astropy.units as u
import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.table import MaskedColumn, QTable, Table
from hypothesis import given, settings
from hypothesis import strategies as st

from dustgp.catalog import Catalog, CatalogError, estimate_extinction_gradient

HUNT2023 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "hunt2023" / "HUNT2023.csv"

ONE_SIGMA = math.erf(1.0 / math.sqrt(2.0))  # 0.6827: Gaussian probability inside ±1 sigma


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20220131)


def make_table(rng: np.random.Generator, n: int = 50, *, units: bool = True) -> Table:
    """A small catalogue table in the default column names, with units unless ``units`` is False."""
    table = Table()
    table["l"] = rng.uniform(0.0, 360.0, n)
    table["b"] = rng.uniform(-30.0, 30.0, n)
    table["distance"] = rng.uniform(100.0, 1000.0, n)
    table["distance_err"] = 0.1 * table["distance"]
    table["A0"] = rng.uniform(-0.1, 3.0, n)
    table["A0_err"] = rng.uniform(0.02, 0.2, n)
    if units:
        for name, unit in [("l", u.deg), ("b", u.deg), ("distance", u.pc), ("distance_err", u.pc)]:
            table[name].unit = unit
        table["A0"].unit = u.mag
        table["A0_err"].unit = u.mag
    return table


def assert_same_stars(catalog: Catalog, table: Table) -> None:
    np.testing.assert_allclose(catalog.l, table["l"], rtol=1e-12)
    np.testing.assert_allclose(catalog.b, table["b"], rtol=1e-12)
    np.testing.assert_allclose(catalog.distance, table["distance"], rtol=1e-12)
    np.testing.assert_allclose(catalog.extinction, table["A0"], rtol=1e-12)
    np.testing.assert_allclose(catalog.extinction_err_observed, table["A0_err"], rtol=1e-12)


# ---- reading files -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("suffix", "write_format"),
    [
        (".fits", "fits"),
        (".ecsv", "ascii.ecsv"),
        (".csv", "ascii.csv"),
        (".xml", "votable"),
        (".parquet", "parquet"),
    ],
)
def test_read_round_trip(rng, tmp_path, suffix, write_format):
    if write_format == "parquet":
        pytest.importorskip("pyarrow")
    table = make_table(rng)
    path = tmp_path / f"stars{suffix}"
    table.write(path, format=write_format)
    catalog = Catalog.read(path, distance_err="distance_err", inflate=False)
    assert len(catalog) == len(table)
    assert_same_stars(catalog, table)
    np.testing.assert_allclose(catalog.distance_err, table["distance_err"], rtol=1e-12)
    np.testing.assert_array_equal(catalog.row_index, np.arange(len(table)))
    assert catalog.dropped_rows.size == 0
    np.testing.assert_array_equal(catalog.inflation, 0.0)


def test_read_passes_format_and_read_kwargs(rng, tmp_path):
    table = make_table(rng, units=False)
    path = tmp_path / "stars.txt"
    table.write(path, format="ascii.csv")
    catalog = Catalog.read(path, format="ascii.csv", read_kwargs={"guess": False})
    assert_same_stars(catalog, table)


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


def test_extinction_err_floor(rng):
    table = make_table(rng, units=False)
    table["A0_err"][:5] = 0.0
    table["A0_err"][5:10] = 0.01
    catalog = Catalog.from_table(table, extinction_err_floor=0.03)
    np.testing.assert_allclose(catalog.extinction_err_observed[:10], 0.03)
    np.testing.assert_allclose(catalog.extinction_err_observed[10:], np.maximum(table["A0_err"][10:], 0.03))


# ---- units ---------------------------------------------------------------------------------------


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


def test_missing_column_lists_available(rng):
    table = make_table(rng)
    with pytest.raises(CatalogError, match=r"missing column 'dist50'.*available columns: 'l', 'b', 'distanc"):
        Catalog.from_table(table, distance="dist50")
    with pytest.raises(CatalogError, match=r"missing columns 'p16', 'p84'"):
        Catalog.from_table(table, extinction_err=("p16", "p84"))


def test_non_numeric_column(rng):
    table = make_table(rng)
    table["name"] = ["star"] * len(table)
    with pytest.raises(CatalogError, match=r"'name'.*numeric"):
        Catalog.from_table(table, extinction="name")


# ---- parallaxes ----------------------------------------------------------------------------------


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


def test_non_positive_parallax_is_a_bad_row(rng):
    table = make_table(rng, units=False)
    table["plx"] = rng.uniform(1.0, 10.0, len(table))
    table["plx"][[3, 17]] = [0.0, -0.5]
    with pytest.raises(CatalogError, match=r"'plx': expected parallax > 0.* 2 rows: 3, 17"):
        Catalog.from_table(table, parallax="plx")
    catalog = Catalog.from_table(table, parallax="plx", on_bad="drop")
    np.testing.assert_array_equal(catalog.dropped_rows, [3, 17])


def test_parallax_options_are_checked(rng):
    table = make_table(rng, units=False)
    table["plx"] = 2.0
    with pytest.raises(CatalogError, match="parallax_err given without parallax"):
        Catalog.from_table(table, parallax_err="plx")
    with pytest.raises(CatalogError, match="either distance_err or parallax"):
        Catalog.from_table(table, parallax="plx", distance_err="distance_err")


# ---- bad rows ------------------------------------------------------------------------------------


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


def test_error_lists_ten_rows_then_the_count(rng):
    table = make_table(rng, units=False)
    table["distance"][3:28] = np.nan
    with pytest.raises(CatalogError) as info:
        Catalog.from_table(table)
    message = str(info.value)
    assert "25 rows: 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, ... and 15 more" in message
    assert "25 of 50 rows are not usable" in message
    assert "on_bad='drop'" in message


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


def test_core_constructor_is_strict():
    with pytest.raises(CatalogError, match=r"column distance: expected distance > 0 pc.* 1 row: 1"):
        Catalog([10.0, 20.0], [0.0, 1.0], [100.0, -1.0], [0.1, 0.2], [0.1, 0.1])
    with pytest.raises(CatalogError, match="from_arrays"):
        Catalog([10.0] * u.deg, [0.0], [100.0], [0.1], [0.1])


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(min_value=-1e4, max_value=1e4, allow_nan=False), min_size=1, max_size=20))
def test_longitude_is_wrapped_into_0_360(longitudes):
    n = len(longitudes)
    catalog = Catalog(longitudes, np.zeros(n), np.full(n, 100.0), np.zeros(n), np.full(n, 0.1))
    assert np.all((catalog.l >= 0.0) & (catalog.l < 360.0))
    np.testing.assert_allclose(np.cos(np.deg2rad(catalog.l)), np.cos(np.deg2rad(longitudes)), atol=1e-9)


# ---- the catalogue object ------------------------------------------------------------------------


def test_catalogue_is_read_only(rng):
    catalog = Catalog.from_table(make_table(rng), distance_err="distance_err")
    with pytest.raises(ValueError, match="read-only"):
        catalog.distance[0] = 1.0
    with pytest.raises(AttributeError):
        catalog.distance = np.ones(len(catalog))  # type: ignore[misc]
    for array in (catalog.extinction_err, catalog.inflation, catalog.row_index, catalog.dropped_rows):
        assert not array.flags.writeable


def test_select_and_split(rng):
    table = make_table(rng, n=101, units=False)
    catalog = Catalog.from_table(table, distance_err="distance_err")
    subset = catalog.select(catalog.distance > 500.0)
    np.testing.assert_array_equal(subset.row_index, np.flatnonzero(np.asarray(table["distance"]) > 500.0))
    np.testing.assert_array_equal(subset.inflation, catalog.inflation[catalog.distance > 500.0])
    picked = catalog.select([5, 1])
    np.testing.assert_array_equal(picked.row_index, [5, 1])
    np.testing.assert_array_equal(picked.extinction_err, catalog.extinction_err[[5, 1]])

    kept, held_out = catalog.split(0.8, seed=3)
    assert (len(kept), len(held_out)) == (81, 20)
    assert set(kept.row_index).isdisjoint(held_out.row_index)
    assert set(kept.row_index) | set(held_out.row_index) == set(range(101))
    again, _ = catalog.split(0.8, seed=3)
    np.testing.assert_array_equal(again.row_index, kept.row_index)
    other, _ = catalog.split(0.8, seed=4)
    assert not np.array_equal(other.row_index, kept.row_index)
    with pytest.raises(ValueError, match="fraction"):
        catalog.split(1.0, seed=0)


def test_to_table_coords_and_summary(rng):
    table = make_table(rng, units=False)
    catalog = Catalog.from_table(table, distance_err="distance_err")
    out = catalog.to_table()
    assert out["distance"].unit == u.pc
    assert out["l"].unit == u.deg
    assert out["A0_err_total"].unit == u.mag
    np.testing.assert_allclose(out["A0_err_total"], np.hypot(out["A0_err"], out["A0_inflation"]))
    again = Catalog.from_table(out, distance_err="distance_err")
    np.testing.assert_allclose(again.extinction_err, catalog.extinction_err)

    coords = catalog.coords
    assert isinstance(coords, SkyCoord)
    assert coords.frame.name == "galactic"
    np.testing.assert_allclose(coords.distance.to_value(u.pc), catalog.distance)

    text = catalog.summary()
    assert text.startswith("Catalog: 50 stars (0 input rows dropped)")
    assert "inflation (quadrature term) median" in text
    assert "50 stars" in repr(catalog)


# ---- distance inflation --------------------------------------------------------------------------


def test_inflation_with_given_gradient(rng):
    table = make_table(rng, units=False)
    catalog = Catalog.from_table(table, distance_err="distance_err", inflate=False)
    np.testing.assert_array_equal(catalog.inflation, 0.0)
    np.testing.assert_array_equal(catalog.extinction_err, catalog.extinction_err_observed)

    def density(l_deg, b_deg, d_pc):
        return np.full_like(d_pc, 2e-3)

    inflated = catalog.inflate_for_distance(density)
    np.testing.assert_allclose(inflated.inflation, 2e-3 * catalog.distance_err)
    np.testing.assert_allclose(
        inflated.extinction_err**2, catalog.extinction_err_observed**2 + (2e-3 * catalog.distance_err) ** 2
    )
    # a Quantity per star is converted to mag/pc; inflating again replaces, not compounds
    per_kpc = inflated.inflate_for_distance(np.full(len(catalog), 2.0) * u.mag / u.kpc)
    np.testing.assert_allclose(per_kpc.extinction_err, inflated.extinction_err)
    with pytest.raises(CatalogError, match="finite"):
        catalog.inflate_for_distance(np.full(len(catalog), np.nan))
    with pytest.raises(CatalogError, match=r"expected a scalar or shape \(50,\), got shape \(3,\)"):
        catalog.inflate_for_distance(np.ones(3))
    with pytest.raises(CatalogError, match=r"'gradient'.*'mag'"):
        catalog.inflate_for_distance(np.ones(len(catalog)) * u.mag)


def test_no_distance_err_means_no_inflation(rng):
    catalog = Catalog.from_table(make_table(rng, units=False))
    assert catalog.distance_err is None
    np.testing.assert_array_equal(catalog.inflation, 0.0)
    with pytest.raises(CatalogError, match="no distance uncertainties"):
        catalog.inflate_for_distance()


def test_inflation_is_logged(rng, caplog):
    with caplog.at_level(logging.INFO, logger="dustgp.catalog"):
        Catalog.from_table(make_table(rng, units=False), distance_err="distance_err")
    assert "median" in caplog.text
    assert "90th percentile" in caplog.text


def test_gradient_fallback_when_neighbours_are_missing():
    # Three stars: nobody has min_neighbours = 5 neighbours, so every star uses max(A, 0) / d.
    g = estimate_extinction_gradient(
        [10.0, 10.1, 10.2], [0.0, 0.0, 0.0], [100.0, 200.0, 400.0], [0.2, -0.1, 0.8], [0.1] * 3, [10.0] * 3
    )
    np.testing.assert_allclose(g, [0.2 / 100.0, 0.0, 0.8 / 400.0])


def test_gradient_of_a_linear_sightline_is_exact():
    # A = 2e-3 d, no noise: every window fit is exact.
    n = 400
    rng = np.random.default_rng(1)
    d = rng.uniform(100.0, 900.0, n)
    g = estimate_extinction_gradient(
        rng.uniform(30.0, 31.0, n), rng.uniform(0.0, 1.0, n), d, 2e-3 * d, np.full(n, 0.05), 0.1 * d
    )
    np.testing.assert_allclose(g, 2e-3, rtol=1e-9)


def test_max_separation_limits_neighbours():
    # Two clumps 20 deg apart with opposite trends; with a 5 deg limit each star only sees its own clump.
    n = 100
    rng = np.random.default_rng(2)
    d = rng.uniform(100.0, 900.0, 2 * n)
    lon = np.concatenate([rng.uniform(0.0, 1.0, n), rng.uniform(20.0, 21.0, n)])
    a = np.concatenate([1e-3 * d[:n], 3e-3 * d[n:]])
    sigma_a = np.full(2 * n, 0.01)
    g = estimate_extinction_gradient(lon, np.zeros(2 * n), d, a, sigma_a, 0.1 * d, max_separation=5.0)
    np.testing.assert_allclose(g[:n], 1e-3, rtol=1e-9)
    np.testing.assert_allclose(g[n:], 3e-3, rtol=1e-9)


# A simulated sightline bundle: uniform 1e-3 mag/pc plus a cloud adding 0.5 mag between 300 and 320 pc.
RHO_0 = 1e-3  # mag/pc
CLOUD_NEAR, CLOUD_DEPTH, CLOUD_A = 300.0, 20.0, 0.5  # pc, pc, mag


def true_extinction(d: np.ndarray) -> np.ndarray:
    return RHO_0 * d + CLOUD_A * np.clip((d - CLOUD_NEAR) / CLOUD_DEPTH, 0.0, 1.0)


@pytest.fixture
def simulated_sky(rng):
    """3000 stars in a 4°×4° patch, true distance uniform in 50-1000 pc, 15% distance errors, σ_A = 0.05."""
    n, frac, sigma_a = 3000, 0.15, 0.05
    d_true = rng.uniform(50.0, 1000.0, n)
    d_obs = d_true * (1.0 + frac * rng.standard_normal(n))
    a_obs = true_extinction(d_true) + sigma_a * rng.standard_normal(n)
    catalog = Catalog.from_arrays(
        rng.uniform(100.0, 104.0, n),
        rng.uniform(-2.0, 2.0, n),
        d_obs,
        a_obs,
        np.full(n, sigma_a),
        distance_err=frac * d_obs,
        inflate=False,
    )
    return catalog, d_true


def test_estimated_gradient_matches_truth_where_smooth(simulated_sky):
    catalog, _ = simulated_sky
    g = estimate_extinction_gradient(
        catalog.l,
        catalog.b,
        catalog.distance,
        catalog.extinction,
        catalog.extinction_err_observed,
        catalog.distance_err,
    )
    assert np.all(np.isfinite(g))
    assert np.all(g >= 0)
    d = catalog.distance
    # Far (> 4 sigma_d) from the cloud and from the 50/1000 pc edges of the simulated population.
    smooth = ((d > 80) & (d < 180)) | ((d > 550) & (d < 750))
    n_smooth = int(smooth.sum())
    # Neighbouring stars share up to `neighbours` = 32 fit points, so count only n/32 independent estimates.
    standard_error = g[smooth].std() / math.sqrt(n_smooth / 32)
    assert abs(g[smooth].mean() - RHO_0) < 3 * standard_error
    # Through the cloud (observed distances 280-360 pc) the estimate sees the step, smoothed by sigma_d.
    in_cloud = (d > 280) & (d < 360)
    assert np.median(g[in_cloud]) > 3 * RHO_0


def test_inflation_calibrates_the_uncertainties(simulated_sky):
    catalog, _ = simulated_sky
    inflated = catalog.inflate_for_distance()
    assert np.all(inflated.inflation >= 0)
    # The likelihood compares the measured A (the true extinction at the TRUE distance, plus noise) with the
    # model at the CATALOGUE distance; the distance error is what the inflation accounts for. Stars beyond
    # 800 pc are left out: there the truncation of the simulated population at 1000 pc biases
    # E[d_true | d_obs].
    use = catalog.distance < 800.0
    residual = np.abs(catalog.extinction - true_extinction(catalog.distance))[use]
    n = int(use.sum())
    binomial_error = math.sqrt(ONE_SIGMA * (1 - ONE_SIGMA) / n)
    inside_raw = np.mean(residual < catalog.extinction_err[use])
    inside_inflated = np.mean(residual < inflated.extinction_err[use])
    assert ONE_SIGMA - inside_raw > 5 * binomial_error  # without inflation: clearly too small sigmas
    assert abs(inside_inflated - ONE_SIGMA) + 3 * binomial_error < abs(inside_raw - ONE_SIGMA)
    assert abs(inside_inflated - ONE_SIGMA) < 4 * binomial_error


# ---- the real catalogue --------------------------------------------------------------------------


def test_hunt2023_open_clusters():
    if not HUNT2023.exists():
        pytest.skip(f"real data not found at {HUNT2023}")
    catalog = Catalog.read(
        HUNT2023,
        l="GLON",
        b="GLAT",
        distance="dist50",
        distance_err=("dist16", "dist84"),
        extinction="AV50",
        extinction_err=("AV16", "AV84"),
        on_bad="drop",
    )
    # Hunt & Reffert 2023 (A&A 673, A114): 6,806 clusters.
    assert len(catalog) + catalog.dropped_rows.size == 6806
    assert len(catalog) > 6700
    assert 1000.0 < np.median(catalog.distance) < 4000.0  # pc, not kpc
    assert catalog.distance.min() == pytest.approx(25.08461)  # the nearest entry, in pc
    assert np.all(catalog.extinction_err_observed > 0)
    assert np.all(np.isfinite(catalog.inflation))
    assert np.all(catalog.inflation >= 0)
    assert np.any(catalog.inflation > 0)
    within_1kpc = int(np.count_nonzero(catalog.distance < 1000.0))
    assert within_1kpc == pytest.approx(1601, abs=5)  # data README: 1,601 clusters within 1 kpc
