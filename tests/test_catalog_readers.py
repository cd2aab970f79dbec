"""Tests of dustgp.catalog.readers: ``Catalog.read`` on every table format astropy reads, its options, and a real
catalogue."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from catalog_tables import SEED, assert_same_stars, make_table
from dustgp.catalog import Catalog

HUNT2023 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "hunt2023" / "HUNT2023.csv"


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(SEED)


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
