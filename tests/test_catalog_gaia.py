"""Tests of dustgp.catalog.gaia: Gaia DR3 stars as a catalogue, the ``dustgp fetch gaia`` command, and run files
with ``source = "gaia-dr3"`` (against the fake TAP service of gaia_fakes).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from astropy.table import Table

from dustgp.catalog import Catalog, Region, catalog_for_grid, fetch_gaia, gaia_archive, gaia_catalog, sky_chunks
from dustgp.cli import main
from dustgp.config import ConfigError, load_config
from dustgp.grid import Grid
from dustgp.pipeline import _stars
from gaia_fakes import CHUNK_DEG, REGION, FakeTap, NoService, fake_stars

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
PAPER_REGIONS = ("orion", "taurus", "perseus", "cygnus_x")


@pytest.fixture
def stars() -> Table:
    return fake_stars(REGION, 400)


@pytest.fixture
def tap(tmp_path: Path, stars: Table) -> FakeTap:
    return FakeTap(tmp_path / "votables", REGION, stars, chunk_deg=CHUNK_DEG)


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
    inflated = gaia_catalog(Table.read(tap.files[next(iter(tap.files))], format="votable"))
    assert np.all(inflated.extinction_err >= inflated.extinction_err_observed)  # distance errors folded in


def test_cli_fetches_writes_and_then_reads_the_cache(
    tmp_path: Path, tap: FakeTap, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setattr(gaia_archive, "default_service", lambda url=gaia_archive.GAIA_TAP_URL: tap)
    out = tmp_path / "stars.fits"
    args = ["fetch", "gaia", "--l", "180,190", "--b", "-25,-20", "--d", "250,550", "--chunk-deg", "2.5"]
    args += ["--out", str(out), "--cache", str(tmp_path / "cache"), "--quiet"]
    assert main(args) == 0
    assert "wrote 400 Gaia DR3 stars" in capsys.readouterr().out
    table = Table.read(out)
    assert len(table) == 400
    assert json.loads(table.meta["REGION"]) == REGION.to_dict()
    assert len(gaia_catalog(table)) == 400
    monkeypatch.setattr(gaia_archive, "default_service", lambda url=gaia_archive.GAIA_TAP_URL: NoService())
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
    monkeypatch.setattr(gaia_archive, "default_service", lambda url=gaia_archive.GAIA_TAP_URL: tap)
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
    monkeypatch.setattr(gaia_archive, "default_service", lambda url=gaia_archive.GAIA_TAP_URL: tap)
    catalog, sky = _stars(config, progress=False)
    assert sky is None
    assert len(catalog) == 300
    assert len(tap.queries) == 8
    assert (tmp_path / "stars.fits").is_file()
    monkeypatch.setattr(gaia_archive, "default_service", lambda url=gaia_archive.GAIA_TAP_URL: NoService())
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
