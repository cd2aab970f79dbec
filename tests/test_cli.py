"""The command line, end to end on a tiny run file, and the run-file checks."""

import json
from pathlib import Path

import pytest
from astropy.table import Table

from dustgp.cli import build_parser, main
from dustgp.config import ConfigError, load_config
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


@pytest.mark.parametrize("command", ["simulate", "fit", "predict", "plot", "info", "demo"])
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
    assert main(["simulate", str(out), "--n-stars", "10", "--quiet"]) == 1  # never overwrites unasked


def test_fit_predict_plot_info(tmp_path: Path, capsys) -> None:
    run_file = tmp_path / "run.toml"
    run_file.write_text(RUN.format(iterations=150))
    out = tmp_path / "out"
    assert main(["fit", str(run_file), "--out", str(out), "--quiet"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["iterations"] <= 150
    assert report["holdout"]["n_stars"] > 0
    assert "truth" in report
    for name in ("map.nc", "map.fits", "fit.ckpt", "figures/total_extinction.png", "figures/elbo.png"):
        assert (out / name).exists(), name
    assert read_map(out / "map.nc").meta["seed"] == 0
    # an existing map is never replaced unasked
    assert main(["fit", str(run_file), "--out", str(out), "--quiet"]) == 1
    # resume continues from the checkpoint
    run_file.write_text(RUN.format(iterations=170))
    assert main(["fit", str(run_file), "--out", str(out), "--resume", "--overwrite", "--quiet", "--no-figures"]) == 0
    assert json.loads((out / "report.json").read_text())["iterations"] <= 170

    target = tmp_path / "fine.nc"
    args = ["predict", str(out / "fit.ckpt"), str(target), "--l", "60,70,10", "--b=-4,4,8", "--d", "150,300,16"]
    assert main([*args, "--samples", "10", "--quiet"]) == 0
    assert read_map(target).grid.shape == (17, 8, 10)  # one ghost cell added from the training grid
    assert main(["plot", str(target), "--out", str(tmp_path / "figs"), "--distances", "200", "250", "--quiet"]) == 0
    assert (tmp_path / "figs" / "density_slices.png").exists()
    capsys.readouterr()
    assert main(["info", str(target)]) == 0
    assert "dustgp_version" in capsys.readouterr().out


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
