"""Run files: every table, key and type is checked, and the message names the file, table, key and expectation."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from dustgp.config import ConfigError, fit_keys, load_config
from dustgp.fitting import FitConfig

BASE = """
[simulate]
n_stars = 100
seed = 4
region = { l = [60, 70, 20], b = [-4, 4, 10], d = [150, 300, 30] }

[grid]
l = [60, 70, 5]
b = [-4, 4, 4]
d = [150, 300, 8]
ghost_cells = 1

[fit]
inducing_points = 60
seed = 1

[predict]
refine = 2
samples = 20

[output]
formats = ["netcdf"]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run.toml"
    path.write_text(text)
    return path


def with_line(table: str, line: str, text: str = BASE) -> str:
    """``text`` with ``line`` (``key = value``) in ``[table]``, replacing the key's line if the table has one."""
    key = line.split("=")[0].strip()
    out, current = [], None
    for row in text.splitlines():
        if row.startswith("["):
            current = row.strip("[]")
        if not (current == table and row.split("=")[0].strip() == key):
            out.append(row)
        if row == f"[{table}]":
            out.append(line)
    return "\n".join(out) + "\n"


def test_the_base_file_loads(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, BASE))
    assert config.grid.shape == (9, 4, 5)
    assert config.fit.inducing_points == 60


@pytest.mark.parametrize(
    ("table", "line", "message"),
    [
        ("grid", "ghost_cels = 4", r"\[grid\] unknown key 'ghost_cels'; known keys: b, d, ghost_cells, l$"),
        ("fit", "inducing_pionts = 4", r"\[fit\] unknown key 'inducing_pionts'; known keys: .*inducing_points"),
        ("predict", "sampels = 4", r"\[predict\] unknown key 'sampels'; known keys: .*samples"),
        ("output", "figure = false", r"\[output\] unknown key 'figure'; known keys: .*figures"),
        ("simulate", "n_star = 4", r"\[simulate\] unknown key 'n_star'; known keys: .*n_stars"),
    ],
)
def test_unknown_keys_name_file_table_key_and_known_keys(tmp_path: Path, table: str, line: str, message: str) -> None:
    path = write(tmp_path, with_line(table, line))
    with pytest.raises(ConfigError, match=re.escape(str(path)) + ": " + message):
        load_config(path)


def test_unknown_tables_and_nested_keys(tmp_path: Path) -> None:
    path = write(tmp_path, BASE + "\n[fitt]\nseed = 2\n")
    with pytest.raises(ConfigError, match=r"unknown top-level table 'fitt'; known tables: \[catalog\], \[simulate\]"):
        load_config(path)
    path = write(tmp_path, "seed = 2\n" + BASE)
    with pytest.raises(ConfigError, match=r"unknown top-level key 'seed'"):
        load_config(path)
    path = write(tmp_path, BASE.replace("d = [150, 300, 30] }", "dd = [150, 300, 30] }"))
    with pytest.raises(ConfigError, match=r"\[simulate.region\] unknown key 'dd'; known keys: b, d, l"):
        load_config(path)
    path = write(tmp_path, BASE.replace("[predict]\nrefine = 2\n", "predict = 3\n[unused]\n"))
    with pytest.raises(ConfigError, match=r"unknown top-level table 'unused'"):
        load_config(path)


@pytest.mark.parametrize(
    ("table", "line", "message"),
    [
        ("fit", 'inducing_points = "100"', r"\[fit\] inducing_points: expected an integer, got '100' \(a string\)"),
        ("fit", 'seed = "one"', r"\[fit\] seed: expected an integer, got 'one' \(a string\)"),
        ("fit", "inducing_points = 100.0", r"\[fit\] inducing_points: expected an integer, got 100.0 \(a float\)"),
        ("fit", "inducing_points = true", r"\[fit\] inducing_points: expected an integer, got True \(a boolean\)"),
        ("fit", 'length_scale = "20"', r"\[fit\] length_scale: expected a number or a list of numbers, got '20'"),
        ("fit", "mean = [1]", r"\[fit\] mean: expected a number, got \[1\] \(an array\)"),
        ("fit", "learn_inducing_locations = 1", r"\[fit\] learn_inducing_locations: expected true or false, got 1"),
        ("fit", "dtype = 64", r"\[fit\] dtype: expected a string, got 64 \(an integer\)"),
        ("grid", "ghost_cells = 2.0", r"\[grid\] ghost_cells: expected an integer, got 2.0 \(a float\)"),
        ("grid", 'ghost_cells = "2"', r"\[grid\] ghost_cells: expected an integer, got '2' \(a string\)"),
        ("predict", "samples = 2.5", r"\[predict\] samples: expected an integer, got 2.5"),
        ("predict", "cell_variance = 1", r"\[predict\] cell_variance: expected true or false, got 1"),
        ("predict", "percentiles = [16, 'x']", r"\[predict\] percentiles: expected a list of numbers"),
        ("output", 'formats = "fits"', r"\[output\] formats: expected a list of one of 'netcdf', 'fits', 'healpix'"),
        ("output", 'formats = ["netcdf", "png"]', r"\[output\] formats: expected a list of one of 'netcdf'"),
        ("output", 'holdout = "0.2"', r"\[output\] holdout: expected a number, got '0.2' \(a string\)"),
        ("simulate", 'n_stars = "100"', r"\[simulate\] n_stars: expected an integer, got '100' \(a string\)"),
        ("simulate", "noise = [0.1]", r"\[simulate\] noise: expected a number, got \[0.1\]"),
    ],
)
def test_wrong_types_name_file_key_and_expected_type(tmp_path: Path, table: str, line: str, message: str) -> None:
    path = write(tmp_path, with_line(table, line))
    with pytest.raises(ConfigError, match=re.escape(str(path)) + ": " + message):
        load_config(path)


def test_every_fit_option_is_a_key_with_its_type(tmp_path: Path) -> None:
    """The [fit] keys follow FitConfig: each field is accepted at its default and refused as a table."""
    defaults = {k: v for k, v in dataclasses.asdict(FitConfig()).items() if v is not None}
    assert set(fit_keys()) == {f.name for f in dataclasses.fields(FitConfig)}
    lines = "\n".join(f"{k} = {v!r}".replace("'", '"').replace("True", "true").replace("False", "false")
                      for k, v in defaults.items())  # fmt: skip
    config = load_config(write(tmp_path, BASE.replace("inducing_points = 60\nseed = 1\n", lines + "\n")))
    assert config.fit == FitConfig()
    for key in defaults:
        path = write(tmp_path, with_line("fit", f"{key} = {{ a = 1 }}"))
        with pytest.raises(ConfigError, match=rf"\[fit\] {key}: expected .*, got {{'a': 1}} \(a table\)"):
            load_config(path)


def test_values_are_checked_with_the_key(tmp_path: Path) -> None:
    cases = [
        ("grid", "", r"\[grid\] l: expected \(lo, hi, n\) with n an integer number of cells, got n=6.0"),
        ("output", "holdout = 1.5", r"\[output\] holdout: expected a share in \[0, 1\), got 1.5"),
        ("output", "checkpoint_every = 0", r"\[output\] checkpoint_every: expected an integer >= 1"),
        ("predict", "samples = 0", r"\[predict\] samples: expected an integer >= 1, got 0"),
        ("fit", 'stop = "never"', r"\[fit\] stop: expected one of"),
    ]
    for table, line, message in cases:
        text = with_line(table, line) if line else BASE.replace("l = [60, 70, 5]", "l = [60, 70, 6.0]")
        with pytest.raises(ConfigError, match=message):
            load_config(write(tmp_path, text))
    partial = BASE.replace("refine = 2\n", "l = [60, 70, 10]\n")
    with pytest.raises(ConfigError, match=r"\[predict\] has l but not all of l, b, d"):
        load_config(write(tmp_path, partial))
    with pytest.raises(ConfigError, match=r"\[predict\] ghost_cells applies to an explicit grid"):
        load_config(write(tmp_path, with_line("predict", "ghost_cells = 2")))
    bad_predict = BASE.replace("refine = 2\n", "l = [60, 70, 10]\nb = [-4, 4, 8]\nd = [300, 150, 16]\n")
    with pytest.raises(ConfigError, match=r"\[predict\] d: expected lo < hi"):
        load_config(write(tmp_path, bad_predict))


def test_output_checkpoint_every_reaches_the_fit(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, with_line("output", "checkpoint_every = 7")))
    assert config.fit.checkpoint_every == 7
    same = with_line("fit", "checkpoint_every = 7", with_line("output", "checkpoint_every = 7"))
    assert load_config(write(tmp_path, same)).fit.checkpoint_every == 7
    differ = with_line("fit", "checkpoint_every = 8", with_line("output", "checkpoint_every = 7"))
    with pytest.raises(ConfigError, match=r"checkpoint_every is 7 in \[output\] but 8 in \[fit\]; give it once"):
        load_config(write(tmp_path, differ))


def test_catalog_table_takes_the_options_of_catalog_read(tmp_path: Path) -> None:
    text = BASE.split("[grid]")[1]
    catalog = '[catalog]\npath = "stars.fits"\ndistance = "dist"\ndistance_unit = "kpc"\n'
    catalog += 'extinction_err = ["A16", "A84"]\non_bad = "drop"\nmax_distance = 1000\n'
    config = load_config(write(tmp_path, catalog + "[grid]" + text))
    assert config.catalog is not None
    assert config.catalog["distance_unit"] == "kpc"
    assert config.catalog["extinction_err"] == ("A16", "A84")
    assert config.catalog["path"] == str((tmp_path / "stars.fits").resolve())
    for line, message in [
        ('on_bad = "ignore"', r"\[catalog\] on_bad: expected one of 'raise', 'drop', got 'ignore'"),
        ('extinction_err = ["a", "b", "c"]', r"extinction_err: expected a string or a list of 2 strings"),
        ("distance_unit = 1000", r"\[catalog\] distance_unit: expected a string or UnitBase, got 1000"),
        ('distnce = "d"', r"\[catalog\] unknown key 'distnce'; known keys: .*distance, distance_err"),
    ]:
        with pytest.raises(ConfigError, match=message):
            load_config(write(tmp_path, with_line("catalog", line, catalog + "[grid]" + text)))


def test_file_errors_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[grid\nl = 1"))
    path = tmp_path / "binary.toml"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match="cannot be read"):
        load_config(path)


def test_distance_kind_is_a_key_of_catalog_and_simulate(tmp_path: Path) -> None:
    text = BASE.split("[grid]")[1]
    catalog = '[catalog]\npath = "stars.fits"\ndistance_err = "d_err"\ndistance_kind = "measurement"\n'
    assert load_config(write(tmp_path, catalog + "[grid]" + text)).catalog["distance_kind"] == "measurement"
    config = load_config(write(tmp_path, with_line("simulate", 'distance_kind = "measurement"')))
    assert config.simulate["distance_kind"] == "measurement"
    with pytest.raises(ConfigError, match=r"\[simulate\] distance_kind: expected one of 'posterior', 'measurement'"):
        load_config(write(tmp_path, with_line("simulate", 'distance_kind = "measured"')))
