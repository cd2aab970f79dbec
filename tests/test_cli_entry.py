"""The entry point (dustgp.cli.entry): exit statuses, what went wrong as one line on stderr (the traceback with -v),
and SIGTERM."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from astropy.table import Table

import dustgp
from cli_support import RUN, assert_one_error_line, catalog_run_text, damaged_checkpoint, fit_args, write_run_file
from dustgp.cli import main
from dustgp.cli.entry import _sigterm_unwinds, _Terminated
from dustgp.fitting import load_checkpoint

# ---- errors: one line on stderr, exit status 2 for what the user gave, 1 for a failed computation -------------


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: fit_args(p, "ghost_cells", "ghost_cels"),
         r"\[grid\] unknown key 'ghost_cels'; known keys: b, d, ghost_cells, l"),
        (lambda p: fit_args(p, "seed = 1", 'seed = "one"'),
         r"\[fit\] seed: expected an integer, got 'one' \(a string\)"),
        (lambda p: fit_args(p, "= 60", '= "60"'),
         r"\[fit\] inducing_points: expected an integer, got '60' \(a string\)"),
        (lambda p: ["fit", write_run_file(p, "[grid\n"), "--out", str(p / "out")], r"run.toml: not valid TOML"),
        (lambda p: ["fit", str(p / "absent.toml")], r"run file .*absent.toml does not exist"),
        (lambda p: ["fit", write_run_file(p, catalog_run_text(p, l=200.0)), "--out", str(p / "out")],
         r"no star of the catalogue \(16 stars\) lies on the grid"),
        (lambda p: ["fit", write_run_file(p, catalog_run_text(p, l=65.0, nan_rows=2)), "--out", str(p / "out")],
         r"2 of 20 rows are not usable \(pass on_bad='drop' to drop them\): column 'A0': expected finite values"),
        (lambda p: ["predict", damaged_checkpoint(p, "empty"), str(p / "m.nc")],
         r"fit.ckpt is not a dustgp checkpoint: the file is empty$"),
        (lambda p: ["predict", damaged_checkpoint(p, "random"), str(p / "m.nc")],
         r"fit.ckpt is not a dustgp checkpoint: not a torch archive"),
        (lambda p: ["predict", damaged_checkpoint(p, "truncated"), str(p / "m.nc")],
         r"fit.ckpt is not a dustgp checkpoint: not a torch archive"),
        (lambda p: ["predict", damaged_checkpoint(p, "crafted"), str(p / "m.nc")],
         r"fit.ckpt is not a dustgp checkpoint: its content cannot be loaded safely \(UnpicklingError\)$"),
        (lambda p: ["predict", damaged_checkpoint(p, "foreign"), str(p / "m.nc")],
         r"fit.ckpt is not a dustgp checkpoint \(expected format 'dustgp-checkpoint-1'\)"),
        (lambda p: ["predict", str(p / "absent.ckpt"), str(p / "m.nc")], r"absent.ckpt: no such checkpoint file"),
        (lambda p: ["predict", damaged_checkpoint(p, "random"), str(p / "m.txt")], r"unknown format"),
        (lambda p: ["predict", damaged_checkpoint(p, "random"), str(p / "no" / "m.nc")], r"no: no such directory"),
        (lambda p: ["info", str(p / "absent.nc")], r"absent.nc: no such file"),
        (lambda p: ["simulate", str(p / "no" / "stars.fits"), "--n-stars", "10"], r"no: no such directory"),
        (lambda p: ["simulate", str(p / "s.fits"), "--d", "500,180,10"], r"d: expected lo < hi, got \(500, 180\) pc"),
    ],
)  # fmt: skip
def test_user_errors_are_one_line_and_status_2(make, message: str, tmp_path: Path, terminal) -> None:
    code, err = terminal(*make(tmp_path), "--quiet")
    assert code == 2
    assert_one_error_line(err, message)
    assert "weights_only" not in err[-1]


# astropy warns that a truncated FITS file "may have been truncated" before the read fails: expected here
@pytest.mark.filterwarnings("ignore::astropy.utils.exceptions.AstropyUserWarning")
def test_damaged_maps_are_one_line_and_status_2(tmp_path: Path, terminal) -> None:
    import xarray as xr

    from known_maps import make_map

    grid = dustgp.Grid(l=(60, 70, 4), b=(-4, 4, 4), d=(150, 300, 5), ghost_cells=1)
    dustgp.write_map(make_map(grid, 1e-3), tmp_path / "map.fits")
    (tmp_path / "cut.fits").write_bytes((tmp_path / "map.fits").read_bytes()[:20000])
    code, err = terminal("info", str(tmp_path / "cut.fits"))
    assert code == 2
    assert_one_error_line(err, r"cut.fits: not a dustgp FITS map: Extension 'DISTANCE_BINS' not found")
    dustgp.write_map(make_map(grid, 1e-3), tmp_path / "map.nc")
    with xr.open_dataset(tmp_path / "map.nc", engine="h5netcdf") as ds:
        ds.drop_vars("extinction_mean").to_netcdf(tmp_path / "cut.nc", engine="h5netcdf")
    code, err = terminal("plot", str(tmp_path / "cut.nc"), "--out", str(tmp_path / "figs"))
    assert code == 2
    assert_one_error_line(err, r"cut.nc: not a dustgp map: variable 'extinction_mean' missing")


def test_a_failed_computation_is_status_1_and_verbose_shows_the_traceback(
    tmp_path: Path, terminal, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(path):
        raise RuntimeError("CUDA out of memory\nsecond line")

    monkeypatch.setattr(dustgp.io, "read_map", broken)
    code, err = terminal("info", str(tmp_path / "map.nc"))
    assert code == 1
    assert err == [
        "ERROR dustgp: failed: RuntimeError: CUDA out of memory; second line (run with -v for the traceback)"
    ]
    code, err = terminal("info", str(tmp_path / "map.nc"), "-v")
    assert code == 1
    assert "Traceback (most recent call last):" in err
    code, err = terminal("predict", str(tmp_path / "absent.ckpt"), str(tmp_path / "m.nc"), "-v")
    assert code == 2
    assert "Traceback (most recent call last):" in err


def test_a_real_terminal_gets_one_line(tmp_path: Path) -> None:
    """The installed command, as a user runs it: stderr holds one line and no traceback."""
    checkpoint = damaged_checkpoint(tmp_path, "crafted")
    done = subprocess.run(
        [sys.executable, "-m", "dustgp.cli", "predict", checkpoint, str(tmp_path / "m.nc")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"ERROR dustgp: {checkpoint} is not a dustgp checkpoint: its content cannot be loaded safely (UnpicklingError)"
    ]


def test_query_and_view_user_errors_are_one_line_and_status_2(tmp_path: Path, terminal) -> None:
    from known_maps import make_map

    grid = dustgp.Grid(l=(60, 70, 5), b=(-4, 4, 4), d=(150, 300, 6), ghost_cells=1)
    dustgp.write_map(make_map(grid, 2e-3), tmp_path / "map.nc")
    Table({"x": [1.0], "b": [0.0], "d": [200.0]}).write(tmp_path / "bad.ecsv")
    cases = [
        (["--l", "61"], "give --l, --b and --d"),
        (["--l", "61,62,63", "--b", "0,1", "--d", "200"], "expected lists of one common length"),
        (["--table", str(tmp_path / "bad.ecsv")], "expected a column 'l' or 'glon' or 'GLON' for l"),
        (["--l", "61", "--b", "0", "--d", "200", "--mode", "samples"], 'mode="samples" needs posterior samples'),
    ]
    for extra, message in cases:
        code, err = terminal("query", str(tmp_path / "map.nc"), *extra)
        assert code == 2, extra
        assert_one_error_line(err, message)
    page = tmp_path / "map.html"
    assert terminal("view", str(tmp_path / "map.nc"), "-o", str(page), "--quiet")[0] == 0
    assert page.read_text().startswith("<!DOCTYPE html>")
    code, err = terminal("view", str(tmp_path / "map.nc"), "-o", str(page))
    assert code == 2
    assert_one_error_line(err, "map.html exists; pass --overwrite to replace it")


# ---- SIGTERM: exit status 143; a fit writes its checkpoint and no maps ------------------------------------------


def test_sigterm_writes_the_checkpoint_and_no_maps(tmp_path: Path) -> None:
    run_file = tmp_path / "run.toml"
    run_file.write_text(RUN.format(iterations=100000).replace("[fit]", '[fit]\ncheckpoint_every = 5\nstop = "none"'))
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "dustgp.cli", "fit", str(run_file), "--out", str(out), "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not (out / "fit.ckpt").exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    stdout, _ = proc.communicate(timeout=120)
    assert proc.returncode == 143
    assert "terminated" in stdout
    assert "no maps written" in stdout
    assert (out / "fit.ckpt").exists()
    assert not (out / "map.nc").exists()
    saved = load_checkpoint(out / "fit.ckpt")
    assert saved["stopped_by"] == "terminated"
    # and it goes on from there
    run_file.write_text(RUN.format(iterations=saved["iterations"] + 3).replace("[fit]", '[fit]\nstop = "none"'))
    assert main(["fit", str(run_file), "--out", str(out), "--resume", "--quiet", "--no-figures"]) == 0
    assert json.loads((out / "report.json").read_text())["iterations"] == saved["iterations"] + 3


def test_sigterm_raises_terminated_within_the_block_and_the_previous_handler_comes_back() -> None:
    def previous(signum: int, frame: object) -> None:
        raise AssertionError("the previous handler ran inside the block")

    saved = signal.signal(signal.SIGTERM, previous)
    try:
        with pytest.raises(_Terminated), _sigterm_unwinds():
            signal.raise_signal(signal.SIGTERM)
        assert signal.getsignal(signal.SIGTERM) is previous
    finally:
        signal.signal(signal.SIGTERM, saved)
