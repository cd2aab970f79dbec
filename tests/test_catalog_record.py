"""Tests of dustgp.catalog.record: the strict core constructor, the read-only record, subsets, output, and the
distance inflation with a given gradient."""

from __future__ import annotations

import logging

import astropy.units as u
import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from hypothesis import given, settings
from hypothesis import strategies as st

from catalog_tables import SEED, make_table
from dustgp.catalog import Catalog, CatalogError


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(SEED)


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
