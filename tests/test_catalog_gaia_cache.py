"""Tests of dustgp.catalog.gaia_cache: cached chunks are never fetched again, damaged or half-written ones are,
and an interrupted fetch resumes where it stopped (against the fake TAP service of gaia_fakes).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
from astropy.table import Table

from dustgp.catalog import ChunkCache, GaiaError
from gaia_fakes import CHUNK_DEG, REGION, FakeTap, NoService, fake_stars, fetch


@pytest.fixture
def stars() -> Table:
    return fake_stars(REGION, 400)


@pytest.fixture
def tap(tmp_path: Path, stars: Table) -> FakeTap:
    return FakeTap(tmp_path / "votables", REGION, stars, chunk_deg=CHUNK_DEG)


def test_cached_chunks_are_never_fetched_again(tmp_path: Path, tap: FakeTap) -> None:
    first = fetch(tmp_path, tap)
    again = fetch(tmp_path, NoService())
    assert np.array_equal(first["source_id"], again["source_id"])
    assert np.array_equal(first["azero_gspphot"], again["azero_gspphot"])
    records = [json.loads(p.read_text()) for p in sorted((tmp_path / "cache").glob("*.json"))]
    assert len(records) == 8
    assert sum(r["rows"] for r in records) == len(first)
    assert {r["query"] for r in records} == set(tap.files)


def test_an_interrupted_fetch_resumes_where_it_stopped(tmp_path: Path, tap: FakeTap) -> None:
    tap.fail[5] = math.inf  # the archive goes away at chunk 6 of 8
    with pytest.raises(GaiaError, match=r"sky chunk 6 of 8 .*5 of 8 chunks are cached in .*run again to resume"):
        fetch(tmp_path, tap, retries=1)
    assert tap.chunks_fetched() == [0, 1, 2, 3, 4, 5, 5]  # chunk 6 tried twice (one retry)
    tap.queries.clear()
    tap.fail.clear()
    table = fetch(tmp_path, tap)
    assert tap.chunks_fetched() == [5, 6, 7]  # only what was missing
    assert len(table) == 400


def test_a_damaged_chunk_is_fetched_again(tmp_path: Path, tap: FakeTap, caplog: pytest.LogCaptureFixture) -> None:
    first = fetch(tmp_path, tap)
    cache = ChunkCache(tmp_path / "cache")
    data, _ = cache.paths(list(tap.files)[3])
    raw = bytearray(data.read_bytes())
    raw[-100] ^= 0xFF  # one flipped byte in the data of chunk 4
    data.write_bytes(bytes(raw))
    tap.queries.clear()
    with caplog.at_level(logging.WARNING, logger="dustgp.catalog.gaia_cache"):
        again = fetch(tmp_path, tap)
    assert tap.chunks_fetched() == [3]
    assert "does not match" in caplog.text
    assert data.name in caplog.text
    assert np.array_equal(np.sort(first["source_id"]), np.sort(again["source_id"]))


def test_a_chunk_without_its_sidecar_is_fetched_again(tmp_path: Path, tap: FakeTap) -> None:
    fetch(tmp_path, tap)
    _, sidecar = ChunkCache(tmp_path / "cache").paths(next(iter(tap.files)))
    sidecar.unlink()  # as if the fetch had stopped between the data file and its record
    tap.queries.clear()
    fetch(tmp_path, tap)
    assert tap.chunks_fetched() == [0]
