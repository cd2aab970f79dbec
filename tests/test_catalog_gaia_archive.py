"""Tests of dustgp.catalog.gaia_archive: fetching a region chunk by chunk from a fake TAP service that answers
with VOTables, retries with backoff, and clear errors. Only the test marked ``network`` talks to the real archive; it
skips without one.
"""

from __future__ import annotations

import json
import math
import socket
from pathlib import Path

import astropy.units as u
import numpy as np
import pytest
from astropy.io.votable import from_table, writeto
from astropy.table import Table

from dustgp.catalog import COLUMNS, GaiaCuts, GaiaError, Region, fetch_gaia_table, gaia_catalog
from gaia_fakes import CHUNK_DEG, REGION, FakeTap, fake_stars, fetch


@pytest.fixture
def stars() -> Table:
    return fake_stars(REGION, 400)


@pytest.fixture
def tap(tmp_path: Path, stars: Table) -> FakeTap:
    return FakeTap(tmp_path / "votables", REGION, stars, chunk_deg=CHUNK_DEG)


def test_fetch_returns_every_star_once_with_units(tmp_path: Path, tap: FakeTap, stars: Table) -> None:
    table = fetch(tmp_path, tap)
    assert sorted(tap.chunks_fetched()) == list(range(8))
    assert table.colnames == list(COLUMNS)
    assert sorted(table["source_id"]) == sorted(stars["source_id"])
    assert table["distance_gspphot"].unit == u.pc
    assert table["azero_gspphot"].unit == u.mag
    assert table["l"].unit == u.deg
    assert table["parallax"].unit == u.mas
    assert json.loads(table.meta["REGION"]) == REGION.to_dict()
    assert json.loads(table.meta["CUTS"]) == GaiaCuts().to_dict()
    assert table.meta["NCHUNKS"] == 8


def test_retries_wait_with_exponential_backoff(tmp_path: Path, tap: FakeTap) -> None:
    waits: list[float] = []
    tap.fail[0] = 3
    table = fetch(tmp_path, tap, retries=3, backoff=1.5, sleep=waits.append)
    assert waits == [1.5, 3.0, 6.0]
    assert len(table) == 400


def test_an_unreachable_archive_is_one_clear_error(tmp_path: Path, tap: FakeTap) -> None:
    tap.fail = {i: math.inf for i in range(8)}
    tap.error = socket.gaierror(-2, "Name or service not known")
    with pytest.raises(GaiaError) as info:
        fetch(tmp_path, tap, retries=2)
    message = str(info.value)
    assert isinstance(info.value, OSError)  # the CLI's user errors: one line, status 2
    assert "sky chunk 1 of 8" in message
    assert "after 3 attempts" in message
    assert "is the network reachable?" in message
    assert "Name or service not known" in message
    assert f"0 of 8 chunks are cached in {tmp_path / 'cache'}" in message


def test_a_query_the_archive_fails_is_not_blamed_on_the_network(tmp_path: Path, tap: FakeTap) -> None:
    tap.fail = {0: math.inf}
    tap.error = ValueError("Error in ADQL: unknown column 'rewe'")  # not an OSError: the query, not the network
    with pytest.raises(GaiaError, match=r"unknown column 'rewe'.*the archive failed the query") as info:
        fetch(tmp_path, tap, retries=0)
    assert "network" not in str(info.value)


def test_an_answer_without_a_selected_column_is_an_error(tmp_path: Path, tap: FakeTap, stars: Table) -> None:
    for path in tap.files.values():
        table = Table.read(path, format="votable")
        table.remove_column("azero_gspphot_upper")
        writeto(from_table(table), str(path))
    with pytest.raises(GaiaError, match="lacks column azero_gspphot_upper"):
        fetch(tmp_path, tap)


def _archive_reachable() -> bool:
    try:
        with socket.create_connection(("gea.esac.esa.int", 443), timeout=5):
            return True
    except OSError:
        return False


@pytest.mark.network
def test_the_real_archive_answers_a_small_region(tmp_path: Path) -> None:
    pytest.importorskip("astroquery")
    if not _archive_reachable():
        pytest.skip("the Gaia archive (gea.esac.esa.int:443) is not reachable from here")
    region = Region(l=(184.0, 184.5), b=(-16.0, -15.5), d=(250, 550))
    table = fetch_gaia_table(region, cache=tmp_path / "cache", progress=False, retries=1)
    assert table.colnames == list(COLUMNS)
    assert len(table) > 0
    l, b = np.asarray(table["l"]), np.asarray(table["b"])
    d = np.asarray(table["distance_gspphot"])
    assert np.all((l >= 184.0) & (l < 184.5) & (b >= -16.0) & (b < -15.5) & (d >= 250) & (d < 550))
    assert np.all(np.asarray(table["azero_gspphot_lower"]) <= np.asarray(table["azero_gspphot_upper"]))
    assert len(gaia_catalog(table, inflate=False)) > 0
