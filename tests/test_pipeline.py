"""Runs: outputs checked before computing, figures never replaced unasked, checkpoints read with a clear message."""

from __future__ import annotations

import tomllib
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot: the tests never need a display

import numpy as np
import pytest
import torch

from dustgp.config import ConfigError, load_config
from dustgp.grid import Grid
from dustgp.pipeline import (
    CheckpointError,
    _stars,
    default_demo_config,
    figure_names,
    read_checkpoint,
    run,
    write_figures,
)
from known_maps import make_map

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

RUN = """
[simulate]
n_stars = 200
seed = 4
region = { l = [60, 70, 20], b = [-4, 4, 10], d = [150, 300, 30] }

[grid]
l = [60, 70, 5]
b = [-4, 4, 4]
d = [150, 300, 8]

[fit]
inducing_points = 20
max_iterations = 5

[predict]
refine = 2
samples = 4
"""

# A grid symmetric about b = 0: the middle of its b centres is computed as 4.44e-16, not 0.
SYMMETRIC = Grid(l=(50, 90, 8), b=(-10, 10, 100), d=(180, 500, 5), ghost_cells=1)


def test_the_default_sightline_is_named_by_its_rounded_position(tmp_path: Path) -> None:
    assert float(np.median(SYMMETRIC.b_centers)) != 0.0  # the rounding noise this test is about
    written = write_figures(make_map(SYMMETRIC, 1e-3), tmp_path, distances=[300.0])
    assert [p.name for p in written] == ["density_slices.png", "total_extinction.png", "sightline_l70_b0.png"]
    assert figure_names(SYMMETRIC, truth=True, losses=True) == [
        "density_truth_comparison.png",
        "total_extinction.png",
        "elbo.png",
        "sightline_l70_b0.png",
    ]
    assert figure_names(SYMMETRIC, truth=False, losses=False, sightlines=[(60.25, -1e-17)])[-1] == (
        "sightline_l60.25_b0.png"
    )


def test_figures_are_not_replaced_unasked(tmp_path: Path) -> None:
    dmap = make_map(SYMMETRIC, 1e-3)
    (tmp_path / "total_extinction.png").write_bytes(b"precious")
    with pytest.raises(FileExistsError, match=r"total_extinction.png exists; pass --overwrite to replace"):
        write_figures(dmap, tmp_path, distances=[300.0], sightlines=[(70.0, 1.0)])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["total_extinction.png"]  # nothing drawn
    written = write_figures(dmap, tmp_path, distances=[300.0], sightlines=[(70.0, 1.0)], overwrite=True)
    assert (tmp_path / "total_extinction.png").read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in written)


def _config(tmp_path: Path):
    path = tmp_path / "run.toml"
    path.write_text(RUN)
    return load_config(path)


def test_a_folder_holding_a_fit_is_resumed_or_replaced_never_restarted_silently(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "fit.ckpt").write_bytes(b"a fit of yesterday")
    with pytest.raises(FileExistsError, match=r"fit.ckpt holds a fit; pass --resume to continue it or --overwrite"):
        run(_config(tmp_path), out=out, progress=False)
    with pytest.raises(CheckpointError, match=r"fit.ckpt is not a dustgp checkpoint: not a torch archive"):
        run(_config(tmp_path), out=out, resume=True, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["fit.ckpt"]


def test_every_output_is_checked_before_computing(tmp_path: Path) -> None:
    config = _config(tmp_path)
    for existing in ("report.json", "figures/sightline_l65_b0.png"):
        out = tmp_path / existing.replace("/", "_")
        (out / existing).parent.mkdir(parents=True)
        (out / existing).write_text("precious")
        with pytest.raises(FileExistsError, match=rf"{existing} exists; pass --overwrite"):
            run(config, out=out, progress=False)
    with pytest.raises(NotADirectoryError, match="is a file; expected an output folder"):
        run(config, out=tmp_path / "run.toml", progress=False)


def test_checkpoints_are_read_with_a_clear_message(tmp_path: Path) -> None:
    path = tmp_path / "fit.ckpt"
    with pytest.raises(FileNotFoundError, match="no such checkpoint file"):
        read_checkpoint(path)
    torch.save({"format": "dustgp-checkpoint-1", "payload": Path("x")}, path)  # only an unsafe load runs this
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    assert (
        str(info.value) == f"{path} is not a dustgp checkpoint: its content cannot be loaded safely (UnpicklingError)"
    )
    assert info.value.__cause__ is None  # torch's text, which suggests weights_only=False, is not chained


def test_section3_example_is_the_demo() -> None:
    """examples/section3.toml says it is `dustgp demo`: same stars, grid, fit, prediction and products."""
    demo = tomllib.loads(default_demo_config().read_text())
    example = tomllib.loads((EXAMPLES / "section3.toml").read_text())
    for table in ("simulate", "grid", "fit", "predict"):
        assert example[table] == demo[table], table
    assert {k: v for k, v in example["output"].items() if k != "dir"} == demo["output"]


def test_a_run_folder_is_locked_while_in_use(tmp_path) -> None:
    import os

    from dustgp.pipeline import RunLock

    with RunLock(tmp_path), pytest.raises(FileExistsError, match="in use by another dustgp run"):
        RunLock(tmp_path).__enter__()
    assert not (tmp_path / RunLock.NAME).exists()
    # a lock left by a process that is gone (kill -9) is taken over
    (tmp_path / RunLock.NAME).write_text("999999999")
    with RunLock(tmp_path):
        assert (tmp_path / RunLock.NAME).read_text() == str(os.getpid())


def test_temporaries_of_interrupted_writes_are_removed(tmp_path) -> None:
    from dustgp.pipeline import _clean_stale_temporaries

    (tmp_path / "figures").mkdir()
    stale = [
        tmp_path / ".fit.ckpt.abc123.tmp",
        tmp_path / ".map.nc.0123456789ab.tmp.nc",
        tmp_path / "figures" / ".a.png.x.tmp.png",
    ]
    for path in stale:
        path.write_bytes(b"half")
    keep = tmp_path / "map.nc"
    keep.write_bytes(b"done")
    _clean_stale_temporaries(tmp_path)
    assert not any(path.exists() for path in stale)
    assert keep.exists()


def test_simulated_distances_read_as_measurements_get_the_volume_prior(tmp_path: Path) -> None:
    measured = RUN.replace("seed = 4\n", 'seed = 4\ndistance_errors = [0.05, 0.2]\ndistance_kind = "measurement"\n')
    (tmp_path / "run.toml").write_text(measured)
    catalog, sky = _stars(load_config(tmp_path / "run.toml"))
    expected = sky.catalog.with_volume_prior()
    np.testing.assert_array_equal(catalog.distance, expected.distance)
    assert np.all(catalog.distance > sky.catalog.distance)  # the Malmquist correction moves every star out
    exact = RUN.replace("seed = 4\n", 'seed = 4\ndistance_kind = "measurement"\n')
    (tmp_path / "run.toml").write_text(exact)
    with pytest.raises(ConfigError, match=r"\[simulate\] distance_kind: 'measurement' needs distance_errors"):
        _stars(load_config(tmp_path / "run.toml"))


def test_the_realistic_mock_example_is_the_benchmark_sky() -> None:
    config = load_config(EXAMPLES / "realistic_mock.toml")
    simulated = dict(config.simulate)
    assert simulated.pop("distance_kind") == "measurement"
    assert simulated.pop("region") == {"l": [50, 90, 100], "b": [-10, 10, 100], "d": [180, 500, 115]}
    # bench_likelihood.mock(seed=1, realistic=True, background=1.6e-3, size=2), option for option
    expected = {"n_stars": 60_000, "structures": "realistic", "noise": 0.05, "noise_floor": 0.05}
    expected |= {"structure_size": 2.0, "background": 1.6e-3, "seed": 1}
    expected |= {"distance_errors": [0.05, 0.2], "outlier_fraction": 0.03, "outlier_amplitude": [0.3, 1.5]}
    assert simulated == expected
    assert config.grid == Grid(l=(50, 90, 20), b=(-10, 10, 20), d=(180, 500, 35), ghost_cells=2)
    assert (config.fit.inducing_points, config.fit.length_scale, config.fit.seed) == (1000, 20.0, 1)


def test_the_prior_sky_example_is_the_calibration_benchmark_sky() -> None:
    config = load_config(EXAMPLES / "prior_sky.toml")
    simulated = dict(config.simulate)
    assert simulated.pop("region") == {"l": [50, 90, 100], "b": [-10, 10, 100], "d": [180, 500, 115]}
    # bench_calibration.mock(seed=1, FIELD), option for option
    expected = {"n_stars": 60_000, "structures": "gaussian-field", "noise": 0.05, "noise_floor": 0.05}
    expected |= {"field_length_scale": [30.0, 30.0, 25.0], "field_scale": 0.1, "background": 1.6e-3, "seed": 1}
    assert simulated == expected
    assert config.grid == Grid(l=(50, 90, 20), b=(-10, 10, 20), d=(180, 500, 35), ghost_cells=2)
    fit = config.fit
    assert (fit.inducing_points, fit.length_scale, fit.likelihood, fit.error_floor) == (1000, 20.0, "gaussian", 0.0)
