"""A fake Gaia TAP service for the tests of dustgp.catalog's Gaia modules: stars spread over a region, written as one
VOTable per sky chunk, answered per query; and a fetch of the test region through it."""

from __future__ import annotations

from pathlib import Path

import astropy.units as u
import numpy as np
from astropy.io.votable import from_table, writeto
from astropy.table import Table

from dustgp.catalog import GaiaCuts, Region, SkyChunk, adql_query, fetch_gaia_table, sky_chunks


def fake_stars(region: Region, n: int, seed: int = 7) -> Table:
    """Stars spread over ``region`` with the archive's columns and units, all passing the default cuts."""
    rng = np.random.default_rng(seed)
    d = rng.uniform(*region.d, n)
    a0 = 1e-3 * d + rng.normal(0, 0.05, n)
    table = Table()
    table["source_id"] = np.arange(1, n + 1, dtype=np.int64) * 1000
    table["l"] = (rng.uniform(*region.l, n) % 360.0) * u.deg
    table["b"] = rng.uniform(*region.b, n) * u.deg
    table["parallax"] = 1000.0 / d * u.mas
    table["parallax_error"] = 0.1 * table["parallax"]
    table["ruwe"] = np.ones(n, dtype=np.float32)
    table["phot_g_mean_mag"] = rng.uniform(10, 17, n).astype(np.float32) * u.mag
    table["distance_gspphot"] = d.astype(np.float32) * u.pc
    table["distance_gspphot_lower"] = (0.9 * d).astype(np.float32) * u.pc
    table["distance_gspphot_upper"] = (1.1 * d).astype(np.float32) * u.pc
    table["azero_gspphot"] = a0.astype(np.float32) * u.mag
    table["azero_gspphot_lower"] = (a0 - 0.1).astype(np.float32) * u.mag
    table["azero_gspphot_upper"] = (a0 + 0.1).astype(np.float32) * u.mag
    return table


def in_chunk(stars: Table, chunk: SkyChunk) -> np.ndarray:
    l_unwrapped = np.asarray(stars["l"]) + 360.0 * (np.asarray(stars["l"]) < chunk.l[0] - 180.0)
    b = np.asarray(stars["b"])
    return (l_unwrapped >= chunk.l[0]) & (l_unwrapped < chunk.l[1]) & (b >= chunk.b[0]) & (b < chunk.b[1])


class FakeJob:
    def __init__(self, path: Path) -> None:
        self.path = path

    def get_results(self) -> Table:
        return Table.read(self.path, format="votable")


class FakeTap:
    """Answers each chunk's query with a VOTable of that chunk's stars, written beforehand; records the queries.

    ``fail`` maps a chunk index to how many of its attempts raise ``error`` (``math.inf``: all of them).
    """

    def __init__(self, folder: Path, region: Region, stars: Table, *, chunk_deg: float, cuts: GaiaCuts | None = None):
        folder.mkdir(parents=True, exist_ok=True)
        self.files: dict[str, Path] = {}
        self.index: dict[str, int] = {}
        for i, chunk in enumerate(sky_chunks(region, chunk_deg=chunk_deg)):
            path = folder / f"chunk{i}.vot"
            writeto(from_table(stars[in_chunk(stars, chunk)]), str(path))
            query = adql_query(region, cuts=cuts, chunk=chunk)
            self.files[query] = path
            self.index[query] = i
        self.queries: list[str] = []
        self.fail: dict[int, float] = {}
        self.error: Exception = ConnectionError("connection refused")

    def launch_job_async(self, query: str) -> FakeJob:
        assert query in self.files, f"a query the test did not expect:\n{query}"
        self.queries.append(query)
        i = self.index[query]
        if self.fail.get(i, 0) > 0:
            self.fail[i] -= 1
            raise self.error
        return FakeJob(self.files[query])

    def chunks_fetched(self) -> list[int]:
        return [self.index[q] for q in self.queries]


class NoService:
    """A service that must not be called (everything is cached)."""

    def launch_job_async(self, query: str) -> FakeJob:
        raise AssertionError("the archive was contacted although every chunk is cached")


REGION = Region(l=(180, 190), b=(-25, -20), d=(250, 550))
CHUNK_DEG = 2.5  # 4 x 2 chunks


def no_sleep(seconds: float) -> None:
    pass


def fetch(tmp_path: Path, service: object, **options: object) -> Table:
    options = {"cache": tmp_path / "cache", "chunk_deg": CHUNK_DEG, "progress": False, "sleep": no_sleep} | options
    return fetch_gaia_table(REGION, service=service, **options)
