"""The subcommands end to end (dustgp.cli.commands) on a tiny run file: simulate, fit, predict, plot, info, resume,
query, outputs never replaced unasked, and the run-file checks."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from astropy.table import Table

import dustgp
from cli_support import RUN, damaged_checkpoint
from dustgp.cli import main
from dustgp.config import ConfigError, load_config
from dustgp.fitting import load_checkpoint
from dustgp.io import read_map


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
    assert report["prior_warning"] is None  # a prior as narrow as the dust's
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


def test_an_unconverged_fit_says_so(tmp_path: Path, capsys) -> None:
    run_file = tmp_path / "run.toml"
    # the map rule passes a step only after the warm-up (2 steps) and needs 3 such in a row: it cannot fire in 4
    run_file.write_text(RUN.format(iterations=4))
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


def test_outputs_are_checked_before_computing_and_never_replaced_unasked(tmp_path: Path, terminal) -> None:
    from known_maps import make_map

    # predict: an existing output is refused before the checkpoint is even read
    (tmp_path / "m.nc").write_bytes(b"precious")
    code, err = terminal("predict", damaged_checkpoint(tmp_path, "random"), str(tmp_path / "m.nc"))
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


def test_the_run_report_says_when_the_foreground_was_left_out(capsys) -> None:
    from dustgp.cli.commands import _print_report

    report = {
        "stars_fitted": {"used": 900, "off_grid": 3, "in_ghost_cells": 0},
        "method": "newton",
        "iterations": 12,
        "fit_seconds": 3.0,
        "seconds_per_iteration": 0.25,
        "stopped_by": "converged",
        "predict_seconds": 1.0,
        "prediction_grid": "Grid(...)",
        "hyperparameters": {"length_scale_pc": [40.0, 41.0, 42.0], "scale_dex": 0.2, "mean_log10_density": -2.8},
        "foreground": {"d_min": 150.0, "extinction": 1e-5, "extinction_err": 2e-4, "limit": 1e-3, "n_stars": 287,
                       "empty": True},
    }  # fmt: skip
    _print_report(report, [])
    expected = "foreground empty: 287 stars just behind 150 pc show 1e-05 ± 0.0002 mag in front of it (limit 0.001 mag)"
    assert f"{expected}: trained without ghost cells" in capsys.readouterr().out
    report["foreground"]["empty"] = False
    _print_report(report, [])
    assert "foreground" not in capsys.readouterr().out
