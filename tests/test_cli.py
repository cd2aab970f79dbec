"""The command line, end to end on a tiny run file, and the run-file checks."""

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from astropy.table import Table

import dustgp
from dustgp.cli import build_parser, main
from dustgp.config import ConfigError, load_config
from dustgp.fitting import load_checkpoint
from dustgp.io import read_map

RUN = """
[simulate]
n_stars = 3000
n_clumps = 1
seed = 4
region = {{ l = [60, 70, 20], b = [-4, 4, 10], d = [150, 300, 30] }}

[grid]
l = [60, 70, 5]
b = [-4, 4, 4]
d = [150, 300, 8]
ghost_cells = 1

[fit]
inducing_points = 60
length_scale = 20.0
max_iterations = {iterations}
seed = 1

[predict]
refine = 2
samples = 20
keep_samples = 4

[output]
holdout = 0.2
formats = ["netcdf", "fits"]
"""


@pytest.mark.parametrize("command", ["simulate", "fit", "predict", "plot", "info", "demo", "view", "query"])
def test_every_option_is_explained(command: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    sub = next(a for a in build_parser()._actions if a.dest == "command").choices[command]
    for action in sub._actions:
        assert action.help, f"{command}: option {action.option_strings or action.dest} has no help"
        for flag in action.option_strings:
            assert flag in text


def test_simulate_writes_a_table(tmp_path: Path) -> None:
    out = tmp_path / "stars.fits"
    assert main(["simulate", str(out), "--n-stars", "500", "--quiet"]) == 0
    table = Table.read(out)
    assert len(table) == 500
    assert {"l", "b", "distance", "A0", "A0_err", "A0_true"} <= set(table.colnames)
    assert main(["simulate", str(out), "--n-stars", "10", "--quiet"]) == 2  # never overwrites unasked
    assert len(Table.read(out)) == 500


def test_fit_predict_plot_info(tmp_path: Path, capsys) -> None:
    run_file = tmp_path / "run.toml"
    run_file.write_text(RUN.format(iterations=150))
    out = tmp_path / "out"
    assert main(["fit", str(run_file), "--out", str(out), "--quiet"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["iterations"] <= 150
    assert report["converged"] == (report["stopped_by"] != "max_iterations")
    assert report["dustgp_version"] == dustgp.__version__
    assert report["seed"] == 1  # [fit] seed
    assert report["seeds"] == {"fit": 1, "predict": 0, "simulate": 4, "holdout": 0}
    assert report["run_config"]["fit"]["inducing_points"] == 60
    assert report["holdout"]["n_stars"] > 0
    assert "truth" in report
    for name in ("map.nc", "map.fits", "fit.ckpt", "figures/total_extinction.png", "figures/elbo.png"):
        assert (out / name).exists(), name
    assert read_map(out / "map.nc").meta["seed"] == 0
    # an existing map is never replaced unasked
    assert main(["fit", str(run_file), "--out", str(out), "--quiet"]) == 2
    # resume continues from the checkpoint. Mark the checkpoint's stored ELBO history: a resumed fit carries it on,
    # a restart from zero (same seed, so the same first iterations) would recompute it unmarked
    payload = torch.load(out / "fit.ckpt", weights_only=True)
    first_losses = payload["losses"].clone()
    payload["losses"][0] -= 1.0
    torch.save(payload, out / "fit.ckpt")
    run_file.write_text(RUN.format(iterations=170))
    assert main(["fit", str(run_file), "--out", str(out), "--resume", "--overwrite", "--quiet", "--no-figures"]) == 0
    resumed = json.loads((out / "report.json").read_text())
    assert report["iterations"] < resumed["iterations"] <= 170
    losses = load_checkpoint(out / "fit.ckpt")["losses"]
    assert losses[0].item() == first_losses[0].item() - 1.0  # the marked history went on: resumed, not restarted
    torch.testing.assert_close(losses[1 : first_losses.numel()], first_losses[1:], rtol=0, atol=0)
    assert losses.numel() == resumed["iterations"]
    assert resumed["seconds_per_iteration"] > 0

    target = tmp_path / "fine.nc"
    args = ["predict", str(out / "fit.ckpt"), str(target), "--l", "60,70,10", "--b=-4,4,8", "--d", "150,300,16"]
    assert main([*args, "--samples", "10", "--quiet"]) == 0
    predicted = read_map(target)
    assert predicted.grid.shape == (17, 8, 10)  # one ghost cell added from the training grid
    # joint samples are kept by default (all 10 drawn here: fewer than DEFAULT_KEEP_SAMPLES), so the dustmaps
    # modes that need them work on a map predicted without options, from Python and from the shell
    assert predicted.n_samples == 10
    every = predicted.query_gal(65.0, 0.0, 0.25, mode="samples")
    capsys.readouterr()
    point = ["--l", "65", "--b", "0", "--d", "250", "--mode", "random_sample", "--seed", "1"]
    assert main(["query", str(target), *point]) == 0
    drawn = Table.read(capsys.readouterr().out, format="ascii.ecsv")["A_random_sample"][0]
    assert np.isclose(every, drawn, rtol=1e-12, atol=0).any()
    assert main(["plot", str(target), "--out", str(tmp_path / "figs"), "--distances", "200", "250", "--quiet"]) == 0
    assert (tmp_path / "figs" / "density_slices.png").exists()
    capsys.readouterr()
    assert main(["info", str(target)]) == 0
    assert "dustgp_version" in capsys.readouterr().out


def test_sigterm_writes_the_checkpoint_and_no_maps(tmp_path: Path) -> None:
    run_file = tmp_path / "run.toml"
    run_file.write_text(RUN.format(iterations=100000).replace("[fit]", "[fit]\ncheckpoint_every = 5\nstop = \"none\""))
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
    run_file.write_text(RUN.format(iterations=saved["iterations"] + 3))
    assert main(["fit", str(run_file), "--out", str(out), "--resume", "--quiet", "--no-figures"]) == 0
    assert json.loads((out / "report.json").read_text())["iterations"] == saved["iterations"] + 3


def test_an_unconverged_fit_says_so(tmp_path: Path, capsys) -> None:
    run_file = tmp_path / "run.toml"
    run_file.write_text(RUN.format(iterations=25))  # the map rule needs a 200-iteration window: it cannot fire
    out = tmp_path / "out"
    assert main(["fit", str(run_file), "--out", str(out), "--no-figures"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["converged"] is False
    assert report["stopped_by"] == "max_iterations"
    assert "NOT CONVERGED" in capsys.readouterr().out


def test_run_file_errors_name_the_problem(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(RUN.format(iterations=10).replace("inducing_points", "inducing_pionts"))
    with pytest.raises(ValueError, match="inducing_pionts"):
        load_config(bad)
    bad.write_text("[grid]\nl = [0, 10, 2]\nb = [0, 10, 2]\nd = [10, 100, 2]\n")
    with pytest.raises(ConfigError, match=r"\[catalog\]"):
        load_config(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml")


# ---- errors: one line on stderr, exit status 2 for what the user gave, 1 for a failed computation -------------


def assert_one_error_line(err: list[str], message: str) -> None:
    """One ERROR line matching ``message``, last; any other line is a one-line warning; no traceback."""
    assert re.search(r"^ERROR dustgp: .*" + message, err[-1]), err
    assert all(line.startswith("WARNING ") for line in err[:-1]), err


def _run_file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "run.toml"
    path.write_text(text)
    return str(path)


def _fit(tmp_path: Path, old: str, new: str) -> list[str]:
    """``dustgp fit`` of the tiny run file with ``old`` replaced by ``new``, into a folder of ``tmp_path``."""
    return ["fit", _run_file(tmp_path, RUN.format(iterations=5).replace(old, new)), "--out", str(tmp_path / "out")]


def _stars(tmp_path: Path, *, l: float, nan_rows: int = 0) -> str:
    table = Table()
    table["l"] = np.full(20, l)
    table["b"] = np.linspace(-3, 3, 20)
    table["distance"] = np.linspace(160, 290, 20)
    table["A0"] = np.linspace(0.1, 0.5, 20)
    table["A0_err"] = np.full(20, 0.05)
    table["A0"][:nan_rows] = np.nan
    table.write(tmp_path / "stars.csv", overwrite=True)
    run = RUN.format(iterations=10)
    return '[catalog]\npath = "stars.csv"\n\n' + run[run.index("[grid]") :]


def _damaged_checkpoint(tmp_path: Path, kind: str) -> str:
    path = tmp_path / "fit.ckpt"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "random":
        path.write_bytes(np.random.default_rng(1).bytes(5000))
    elif kind == "foreign":
        torch.save({"weights": torch.zeros(3)}, path)
    elif kind == "crafted":  # a pickle that only an unsafe load would run
        torch.save({"format": "dustgp-checkpoint-1", "payload": Path("x")}, path)
    elif kind == "truncated":
        torch.save({"format": "dustgp-checkpoint-1", "model": {"w": torch.zeros(1000)}}, path)
        path.write_bytes(path.read_bytes()[:2000])
    return str(path)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: _fit(p, "ghost_cells", "ghost_cels"),
         r"\[grid\] unknown key 'ghost_cels'; known keys: b, d, ghost_cells, l"),
        (lambda p: _fit(p, "seed = 1", 'seed = "one"'),
         r"\[fit\] seed: expected an integer, got 'one' \(a string\)"),
        (lambda p: _fit(p, "= 60", '= "60"'),
         r"\[fit\] inducing_points: expected an integer, got '60' \(a string\)"),
        (lambda p: ["fit", _run_file(p, "[grid\n"), "--out", str(p / "out")], r"run.toml: not valid TOML"),
        (lambda p: ["fit", str(p / "absent.toml")], r"run file .*absent.toml does not exist"),
        (lambda p: ["fit", _run_file(p, _stars(p, l=200.0)), "--out", str(p / "out")],
         r"no star of the catalogue \(16 stars\) lies on the grid"),
        (lambda p: ["fit", _run_file(p, _stars(p, l=65.0, nan_rows=2)), "--out", str(p / "out")],
         r"2 of 20 rows are not usable \(pass on_bad='drop' to drop them\): column 'A0': expected finite values"),
        (lambda p: ["predict", _damaged_checkpoint(p, "empty"), str(p / "m.nc")],
         r"fit.ckpt is not a dustgp checkpoint: the file is empty$"),
        (lambda p: ["predict", _damaged_checkpoint(p, "random"), str(p / "m.nc")],
         r"fit.ckpt is not a dustgp checkpoint: not a torch archive"),
        (lambda p: ["predict", _damaged_checkpoint(p, "truncated"), str(p / "m.nc")],
         r"fit.ckpt is not a dustgp checkpoint: not a torch archive"),
        (lambda p: ["predict", _damaged_checkpoint(p, "crafted"), str(p / "m.nc")],
         r"fit.ckpt is not a dustgp checkpoint: its content cannot be loaded safely \(UnpicklingError\)$"),
        (lambda p: ["predict", _damaged_checkpoint(p, "foreign"), str(p / "m.nc")],
         r"fit.ckpt is not a dustgp checkpoint \(expected format 'dustgp-checkpoint-1'\)"),
        (lambda p: ["predict", str(p / "absent.ckpt"), str(p / "m.nc")], r"absent.ckpt: no such checkpoint file"),
        (lambda p: ["predict", _damaged_checkpoint(p, "random"), str(p / "m.txt")], r"unknown format"),
        (lambda p: ["predict", _damaged_checkpoint(p, "random"), str(p / "no" / "m.nc")], r"no: no such directory"),
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


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"dustgp {dustgp.__version__}"


def test_outputs_are_checked_before_computing_and_never_replaced_unasked(tmp_path: Path, terminal) -> None:
    from known_maps import make_map

    # predict: an existing output is refused before the checkpoint is even read
    (tmp_path / "m.nc").write_bytes(b"precious")
    code, err = terminal("predict", _damaged_checkpoint(tmp_path, "random"), str(tmp_path / "m.nc"))
    assert code == 2
    assert err[0].endswith("m.nc exists; pass --overwrite (overwrite=True) to replace it")
    assert (tmp_path / "m.nc").read_bytes() == b"precious"
    # plot: existing figures are kept unless --overwrite
    grid = dustgp.Grid(l=(60, 70, 4), b=(-4, 4, 4), d=(150, 300, 5), ghost_cells=1)
    dustgp.write_map(make_map(grid, 1e-3), tmp_path / "map.nc")
    figs = tmp_path / "figs"
    args = ["plot", str(tmp_path / "map.nc"), "--out", str(figs), "--distances", "200", "--quiet"]
    assert terminal(*args)[0] == 0
    names = sorted(p.name for p in figs.iterdir())
    assert names == ["density_slices.png", "sightline_l65_b0.png", "total_extinction.png"]
    (figs / "total_extinction.png").write_bytes(b"precious")
    code, err = terminal(*args)
    assert code == 2
    assert "sightline_l65_b0.png exist; pass --overwrite to replace" in err[0]
    assert (figs / "total_extinction.png").read_bytes() == b"precious"
    assert terminal(*args, "--overwrite")[0] == 0
    assert (figs / "total_extinction.png").read_bytes() != b"precious"
    assert sorted(p.name for p in figs.iterdir()) == names  # no temporary files left


def test_a_real_terminal_gets_one_line(tmp_path: Path) -> None:
    """The installed command, as a user runs it: stderr holds one line and no traceback."""
    checkpoint = _damaged_checkpoint(tmp_path, "crafted")
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


def test_query_points_and_tables(tmp_path: Path, capsys) -> None:
    from known_maps import make_map

    grid = dustgp.Grid(l=(60, 70, 5), b=(-4, 4, 4), d=(150, 300, 6), ghost_cells=1)
    dmap = make_map(grid, 2e-3)  # uniform: A(d) = 2e-3 mag/pc × d
    dustgp.write_map(dmap, tmp_path / "map.nc")
    capsys.readouterr()
    # points: lists of one common length, a single value repeating; negative values as users write them
    assert main(["query", str(tmp_path / "map.nc"), "--l", "61,65", "--b", "-1.5,-2", "--d", "200"]) == 0
    out = Table.read(capsys.readouterr().out, format="ascii.ecsv")
    np.testing.assert_allclose(out["A_mean"], [0.4, 0.4], rtol=1e-12)
    assert str(out["A_mean"].unit) == "mag"
    assert list(out["in_map"]) == [True, True]
    # a table in (with its own column names and a distance in kpc), a table out
    stars = Table({"glon": [62.0, 90.0], "glat": [0.0, 0.0], "dist": [0.25, 0.25]}, units={"dist": "kpc"})
    stars.write(tmp_path / "stars.ecsv")
    args = ["query", str(tmp_path / "map.nc"), "--table", str(tmp_path / "stars.ecsv"), "--out"]
    assert main([*args, str(tmp_path / "a.ecsv"), "--mode", "percentile", "--pct", "16,84", "--quiet"]) == 0
    answer = Table.read(tmp_path / "a.ecsv")
    assert answer.colnames == ["glon", "glat", "dist", "A_p16", "A_p84", "in_map", "reliable_dist"]
    # known_maps stores percentile q as (1 + (q - 50)/100) times the value: 0.66 and 1.34 times 0.5 mag
    np.testing.assert_allclose(answer["A_p16"][0], 0.66 * 0.5, rtol=1e-12)
    np.testing.assert_allclose(answer["A_p84"][0], 1.34 * 0.5, rtol=1e-12)
    assert np.isnan(answer["A_p16"][1])  # l = 90 is off the map
    assert list(answer["in_map"]) == [True, False]
    assert main([*args, str(tmp_path / "d.fits"), "--density", "--quiet"]) == 0
    np.testing.assert_allclose(Table.read(tmp_path / "d.fits")["rho_mean"][0], 2e-3, rtol=1e-12)


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
