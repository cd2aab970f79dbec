"""Gaia DR3 fetch: the ADQL text, the sky chunks, the chunk cache (resume, checksums) against a fake TAP service
that answers with VOTables written here, the catalogue it makes, the ``dustgp fetch gaia`` command and the
``source = "gaia-dr3"`` run files. Only the test marked ``network`` talks to the real archive; it skips without one.
"""

from __future__ import annotations

import json
import logging
import math
import socket
from pathlib import Path

import astropy.units as u
import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.io.votable import from_table, writeto
from astropy.table import Table

from dustgp import gaia
from dustgp.catalog import Catalog
from dustgp.cli import main
from dustgp.config import ConfigError, load_config
from dustgp.gaia import (
    COLUMNS,
    ChunkCache,
    GaiaCuts,
    GaiaError,
    Region,
    SkyChunk,
    adql_query,
    catalog_for_grid,
    fetch_gaia,
    fetch_gaia_table,
    sky_chunks,
)
from dustgp.grid import Grid
from dustgp.pipeline import _stars

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
PAPER_REGIONS = ("orion", "taurus", "perseus", "cygnus_x")


# ---- the query text --------------------------------------------------------------------------------------------

# The query of one 5 x 5 deg chunk in Orion with the default cuts. The cone's numbers are checked geometrically by
# test_enclosing_circle_contains_its_chunk; the rest is the documented selection, written out by hand.
EXPECTED_QUERY = """\
SELECT source_id, l, b, parallax, parallax_error, ruwe, phot_g_mean_mag, distance_gspphot, distance_gspphot_lower, \
distance_gspphot_upper, azero_gspphot, azero_gspphot_lower, azero_gspphot_upper
FROM gaiadr3.gaia_source
WHERE 1 = CONTAINS(POINT('ICRS', ra, dec), CIRCLE('ICRS', 68.044207, 14.003416, 3.427254))
  AND l >= 180 AND l < 185
  AND b >= -25 AND b < -20
  AND distance_gspphot >= 250 AND distance_gspphot < 550
  AND distance_gspphot_lower IS NOT NULL AND distance_gspphot_upper IS NOT NULL
  AND azero_gspphot IS NOT NULL AND azero_gspphot_lower IS NOT NULL AND azero_gspphot_upper IS NOT NULL
  AND parallax_over_error >= 5
  AND ruwe < 1.4"""


def test_adql_text_of_one_region() -> None:
    assert adql_query(Region(l=(180, 185), b=(-25, -20), d=(250, 550))) == EXPECTED_QUERY


def test_adql_text_with_changed_cuts_wrap_and_parallax_distances() -> None:
    cuts = GaiaCuts(
        min_parallax_over_error=None,  # off
        max_ruwe=math.inf,  # off, as a run file writes it
        max_g_mag=17,
        libnames=("MARCS", "PHOENIX"),
        where=("phot_bp_mean_mag IS NOT NULL",),
    )
    query = adql_query(Region(l=(350, 10), b=(60, 70), d=(100, 200)), cuts=cuts, distance_from="parallax")
    lines = query.splitlines()[3:]
    assert lines == [
        "  AND (l >= 350 OR l < 10)",
        "  AND b >= 60 AND b < 70",
        "  AND parallax > 5 AND parallax <= 10",  # 1000 / 200 pc and 1000 / 100 pc, mas
        "  AND distance_gspphot_lower IS NOT NULL AND distance_gspphot_upper IS NOT NULL",
        "  AND azero_gspphot IS NOT NULL AND azero_gspphot_lower IS NOT NULL AND azero_gspphot_upper IS NOT NULL",
        "  AND phot_g_mean_mag < 17",
        "  AND libname_gspphot IN ('MARCS', 'PHOENIX')",
        "  AND (phot_bp_mean_mag IS NOT NULL)",
    ]
    assert "parallax_over_error" not in query
    assert "ruwe <" not in query


@pytest.mark.parametrize(
    ("field", "value"),
    [("libnames", ("MARCS'); DROP",)), ("max_ruwe", "1.4"), ("max_ruwe", math.nan), ("where", "ruwe < 2")],
)
def test_cuts_refuse_what_would_break_the_query(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        GaiaCuts(**{field: value})


def test_cuts_from_a_run_file_table_name_unknown_keys() -> None:
    assert GaiaCuts.from_dict({"max_ruwe": 1.2, "libnames": ["MARCS"]}) == GaiaCuts(max_ruwe=1.2, libnames=("MARCS",))
    with pytest.raises(ValueError, match="unknown 'max_rwue'"):
        GaiaCuts.from_dict({"max_rwue": 1.2})


# ---- regions and chunks ----------------------------------------------------------------------------------------


def test_region_from_a_grid_is_padded_and_skips_the_ghost_cells() -> None:
    grid = Grid(l=(180, 225, 45), b=(-35, 0, 35), d=(300, 550, 25), ghost_cells=3)
    region = Region.from_grid(grid, padding_deg=0.5, padding_fraction=0.05)
    assert region.l == pytest.approx((179.5, 225.5))
    assert region.b == pytest.approx((-35.5, 0.5))
    assert region.d == pytest.approx((285.0, 577.5))  # from d_min = 300 pc, not from the ghost cells' 0 pc
    assert Region(l=(0, 10), b=(80, 89.8), d=(10, 20)).padded(0.5).b == (79.5, 90.0)  # clipped at the pole


@pytest.mark.parametrize(
    ("l", "b", "chunk_deg", "n_chunks"),
    [((180, 217), (-25.5, -3.8), 5.0, 8 * 5), ((72, 86), (-5, 5), 5.0, 3 * 2), ((350, 10), (60, 70), 8.0, 4 * 2)],
)
def test_chunks_tile_the_box_once(l: tuple, b: tuple, chunk_deg: float, n_chunks: int) -> None:
    region = Region(l=l, b=b, d=(100, 200))
    chunks = sky_chunks(region, chunk_deg=chunk_deg)
    assert len(chunks) == n_chunks
    for c in chunks:
        assert c.l[1] - c.l[0] <= chunk_deg + 1e-9
        assert c.b[1] - c.b[0] <= chunk_deg + 1e-9
        assert not (c.l[0] < 360.0 < c.l[1])  # no chunk straddles l = 360
    # every point of the box lies in exactly one chunk (half-open chunks: shared edges count once)
    rng = np.random.default_rng(3)
    width = region.l[1] - region.l[0]
    ls = np.concatenate([region.l[0] + width * rng.random(2000), [c.l[0] for c in chunks]])
    bs = np.concatenate([rng.uniform(*region.b, 2000), [c.b[0] for c in chunks]])
    inside = np.array(
        [[(c.l[0] <= x < c.l[1]) and (c.b[0] <= y < c.b[1]) for c in chunks] for x, y in zip(ls, bs, strict=True)]
    )
    assert np.all(inside.sum(axis=1) == 1)


@pytest.mark.parametrize(
    "chunk",
    [
        SkyChunk(l=(180, 185), b=(-25, -20)),
        SkyChunk(l=(72, 86), b=(-5, 5)),
        SkyChunk(l=(356.5, 363.5), b=(80, 90)),  # at the pole, across l = 0
        SkyChunk(l=(10, 40), b=(-60, -30)),
    ],
)
def test_enclosing_circle_contains_its_chunk(chunk: SkyChunk) -> None:
    ra, dec, radius = chunk.enclosing_circle()
    grid_l, grid_b = np.meshgrid(np.linspace(*chunk.l, 301), np.linspace(*chunk.b, 301))
    points = SkyCoord(l=grid_l.ravel() * u.deg, b=grid_b.ravel() * u.deg, frame="galactic")
    separation = points.separation(SkyCoord(ra=ra * u.deg, dec=dec * u.deg, frame="icrs")).deg
    assert separation.max() <= radius  # every star of the chunk is inside the cone the archive searches
    assert radius - separation.max() < 0.02  # and the cone is no wider than the documented 0.01 deg margin needs


def test_invalid_regions_and_chunk_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="b: expected"):
        Region(l=(0, 10), b=(10, -10), d=(1, 2))
    with pytest.raises(ValueError, match="d: expected"):
        Region(l=(0, 10), b=(-10, 10), d=(500, 100))
    with pytest.raises(ValueError, match="chunk_deg"):
        sky_chunks(Region(l=(0, 10), b=(-10, 10), d=(1, 2)), chunk_deg=0)


# ---- a fake TAP service answering with VOTables ------------------------------------------------------------------


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


@pytest.fixture
def stars() -> Table:
    return fake_stars(REGION, 400)


@pytest.fixture
def tap(tmp_path: Path, stars: Table) -> FakeTap:
    return FakeTap(tmp_path / "votables", REGION, stars, chunk_deg=CHUNK_DEG)


def no_sleep(seconds: float) -> None:
    pass


def fetch(tmp_path: Path, service: object, **options: object) -> Table:
    options = {"cache": tmp_path / "cache", "chunk_deg": CHUNK_DEG, "progress": False, "sleep": no_sleep} | options
    return fetch_gaia_table(REGION, service=service, **options)


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
    with caplog.at_level(logging.WARNING, logger="dustgp.gaia"):
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


def test_the_catalogue_uses_the_gspphot_percentiles(tmp_path: Path, tap: FakeTap, stars: Table) -> None:
    catalog = fetch_gaia(
        REGION, service=tap, cache=tmp_path / "cache", chunk_deg=CHUNK_DEG, progress=False, inflate=False
    )
    assert isinstance(catalog, Catalog)
    assert len(catalog) == 400
    order = np.argsort(np.asarray(stars["source_id"]))
    d = np.asarray(stars["distance_gspphot"], dtype=np.float64)[order]
    fetched = np.sort(catalog.distance)
    assert fetched == pytest.approx(np.sort(d), rel=1e-6)
    # sigma = (p84 - p16) / 2: 0.1 d for the distances and 0.1 mag for A0, as the fake stars were made
    assert catalog.distance_err == pytest.approx(0.1 * catalog.distance, rel=1e-5)
    assert catalog.extinction_err == pytest.approx(np.full(400, 0.1), rel=1e-5)
    inflated = gaia.gaia_catalog(Table.read(tap.files[next(iter(tap.files))], format="votable"))
    assert np.all(inflated.extinction_err >= inflated.extinction_err_observed)  # distance errors folded in


# ---- the command line --------------------------------------------------------------------------------------------


def test_cli_fetches_writes_and_then_reads_the_cache(
    tmp_path: Path, tap: FakeTap, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setattr(gaia, "default_service", lambda url=gaia.GAIA_TAP_URL: tap)
    out = tmp_path / "stars.fits"
    args = ["fetch", "gaia", "--l", "180,190", "--b", "-25,-20", "--d", "250,550", "--chunk-deg", "2.5"]
    args += ["--out", str(out), "--cache", str(tmp_path / "cache"), "--quiet"]
    assert main(args) == 0
    assert "wrote 400 Gaia DR3 stars" in capsys.readouterr().out
    table = Table.read(out)
    assert len(table) == 400
    assert json.loads(table.meta["REGION"]) == REGION.to_dict()
    assert len(gaia.gaia_catalog(table)) == 400
    monkeypatch.setattr(gaia, "default_service", lambda url=gaia.GAIA_TAP_URL: NoService())
    assert main([*args, "--overwrite"]) == 0  # every chunk from the cache


def test_cli_negative_bounds_as_users_write_them(capsys: pytest.CaptureFixture) -> None:
    # "--b -25.5,-3.8" (the value looks like an option to argparse) works like "--b=-25.5,-3.8"
    args = ["fetch", "gaia", "--l", "180,217", "--b", "-25.5,-3.8", "--d", "250,550", "--out", "x.fits"]
    assert main([*args, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("40 sky chunks;")
    assert "AND b >= -25.5 AND b < -21.16" in out


def test_cli_user_errors_are_one_line_and_status_2(
    tmp_path: Path, tap: FakeTap, monkeypatch: pytest.MonkeyPatch, terminal
) -> None:
    base = ["fetch", "gaia", "--l", "180,190", "--b=-25,-20", "--d", "250,550", "--quiet"]
    code, err = terminal(*base, "--out", str(tmp_path / "missing" / "stars.fits"))
    assert code == 2
    assert len(err) == 1
    assert err[0].startswith("ERROR dustgp:")
    assert "no such directory" in err[0]
    code, err = terminal(*base, "--d", "550,250", "--out", str(tmp_path / "stars.fits"))
    assert code == 2
    assert len(err) == 1
    assert "d: expected 0 <= lo < hi pc, got (550, 250)" in err[0]
    tap.fail = {i: math.inf for i in range(8)}
    monkeypatch.setattr(gaia, "default_service", lambda url=gaia.GAIA_TAP_URL: tap)
    args = ["--out", str(tmp_path / "stars.fits"), "--retries", "0", "--chunk-deg", "2.5"]
    code, err = terminal(*base, *args, "--cache", str(tmp_path / "cache"))
    assert code == 2
    assert len(err) == 1
    assert err[0].startswith("ERROR dustgp: could not fetch sky chunk 1 of 8")
    assert "is the network reachable?" in err[0]
    assert "run again to resume" in err[0]
    assert not (tmp_path / "stars.fits").exists()
    with pytest.raises(SystemExit) as info:  # a malformed value: argparse's usage message, status 2
        main(["fetch", "gaia", "--l", "180", "--b=-25,-20", "--d", "250,550", "--out", "x.fits"])
    assert info.value.code == 2


def test_cli_help_explains_every_option(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["fetch", "gaia", "--help"])
    text = capsys.readouterr().out
    for flag in ("--l", "--b", "--d", "--out", "--cache", "--overwrite", "--max-ruwe", "--dry-run"):
        assert flag in text


# ---- run files ---------------------------------------------------------------------------------------------------

RUN_FILE = """
[catalog]
source = "gaia-dr3"
path = "stars.fits"
cache = "chunks"
padding_deg = 0.0
padding_fraction = 0.0
chunk_deg = 2.5
cuts = { max_ruwe = 1.4, min_parallax_over_error = 5.0 }

[grid]
l = [180, 190, 10]
b = [-25, -20, 5]
d = [250, 550, 10]
ghost_cells = 1

[fit]
inducing_points = 50
"""


def test_a_gaia_run_file_validates_and_resolves_its_paths(tmp_path: Path) -> None:
    (tmp_path / "run.toml").write_text(RUN_FILE)
    config = load_config(tmp_path / "run.toml")
    assert config.catalog is not None
    assert config.catalog["source"] == "gaia-dr3"
    assert config.catalog["path"] == str((tmp_path / "stars.fits").resolve())
    assert config.catalog["cache"] == str((tmp_path / "chunks").resolve())
    assert config.catalog["cuts"] == {"max_ruwe": 1.4, "min_parallax_over_error": 5.0}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (('source = "gaia-dr3"', 'source = "gaia"'), "source: expected one of 'file', 'gaia-dr3'"),
        (("chunk_deg = 2.5", 'distance = "dist"'), "unknown key 'distance'"),  # a column mapping: not for Gaia
        (("max_ruwe = 1.4", 'max_ruwe = "1.4"'), r"\[catalog.cuts\] max_ruwe: expected a number"),
        (("max_ruwe = 1.4", "max_rwue = 1.4"), r"\[catalog.cuts\] unknown key 'max_rwue'"),
        (("chunk_deg = 2.5", "chunk_deg = 90.0"), r"\[catalog\] chunk_deg: expected a size in \(0, 30\]"),
        (("padding_fraction = 0.0", "padding_fraction = 1.5"), r"\[catalog\] padding_fraction"),
    ],
)
def test_a_gaia_run_file_with_a_mistake_says_where(tmp_path: Path, change: tuple[str, str], message: str) -> None:
    (tmp_path / "run.toml").write_text(RUN_FILE.replace(*change))
    with pytest.raises(ConfigError, match=message):
        load_config(tmp_path / "run.toml")


def test_a_run_fetches_once_then_reads_its_catalogue(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "run.toml").write_text(RUN_FILE)
    config = load_config(tmp_path / "run.toml")
    stars = fake_stars(REGION, 300, seed=11)
    tap = FakeTap(tmp_path / "votables", REGION, stars, chunk_deg=2.5)
    monkeypatch.setattr(gaia, "default_service", lambda url=gaia.GAIA_TAP_URL: tap)
    catalog, sky = _stars(config, progress=False)
    assert sky is None
    assert len(catalog) == 300
    assert len(tap.queries) == 8
    assert (tmp_path / "stars.fits").is_file()
    monkeypatch.setattr(gaia, "default_service", lambda url=gaia.GAIA_TAP_URL: NoService())
    again, _ = _stars(config, progress=False)  # read from path = "stars.fits", the archive untouched
    assert np.array_equal(np.sort(again.distance), np.sort(catalog.distance))
    # the same file for another region is refused, not silently used
    (tmp_path / "run.toml").write_text(RUN_FILE.replace("l = [180, 190, 10]", "l = [181, 190, 9]"))
    with pytest.raises(ValueError, match="holds Gaia stars for another region"):
        _stars(load_config(tmp_path / "run.toml"), progress=False)


def test_catalog_for_grid_pads_the_grid(tmp_path: Path) -> None:
    grid = Grid(l=(181, 189, 8), b=(-24, -21, 3), d=(263.0, 520.0, 10), ghost_cells=1)
    stars = fake_stars(REGION, 200, seed=5)
    region = Region.from_grid(grid, padding_deg=1.0, padding_fraction=0.05)
    tap = FakeTap(tmp_path / "votables", region, stars, chunk_deg=5.0)
    catalog = catalog_for_grid(
        grid, cache=str(tmp_path / "cache"), padding_deg=1.0, padding_fraction=0.05, service=tap, progress=False
    )
    assert len(tap.queries) == len(sky_chunks(region, chunk_deg=5.0))
    assert region.l == pytest.approx((180, 190))
    assert region.d == pytest.approx((249.85, 546.0))
    assert len(catalog) == 200


@pytest.mark.parametrize("name", PAPER_REGIONS)
def test_the_paper_regions_fetch_from_gaia(name: str) -> None:
    config = load_config(EXAMPLES / f"{name}.toml")
    assert config.catalog is not None
    assert config.catalog["source"] == "gaia-dr3"
    assert Path(config.catalog["path"]).name == f"{name}_stars.fits"
    region = Region.from_grid(config.grid, padding_deg=config.catalog.get("padding_deg", 0.5))
    assert region.d[0] < config.grid.d_min
    assert region.d[1] > config.grid.d_max


# ---- the real archive ------------------------------------------------------------------------------------------


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
    assert len(gaia.gaia_catalog(table, inflate=False)) > 0
