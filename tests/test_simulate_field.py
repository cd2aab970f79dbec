"""The Gaussian field (dustgp.simulate.field): a draw of the model's own prior, against the RBF kernel it claims."""

from pathlib import Path

import numpy as np
import pytest
from astropy.table import Table

from dustgp.cli import main
from dustgp.grid import lbd_to_xyz
from dustgp.simulate import GaussianField, simulate
from simulate_support import REGION

GAMMA = (30.0, 20.0, 10.0)
ALPHA = 0.1


def _kernel(lag: np.ndarray) -> np.ndarray:
    return ALPHA * np.exp(-0.5 * ((lag / np.asarray(GAMMA)) ** 2).sum(-1))


def test_one_draw_has_the_rbf_covariance() -> None:
    # (alpha/J) sum_j cos(omega_j . lag) averages J terms of variance <= 1/2 about the kernel: sd <= alpha/sqrt(2J)
    field = GaussianField(1e-3, GAMMA, ALPHA, seed=5, n_features=4000)
    lags = np.array([[0, 0, 0], [30, 0, 0], [0, 20, 0], [0, 0, 10], [15, 10, 5], [60, 0, 0], [0, 0, 40]], float)
    assert np.allclose(field.covariance(lags), _kernel(lags), atol=5 * ALPHA / np.sqrt(2 * 4000))
    assert field.covariance(lags[:1])[0] == pytest.approx(ALPHA)


def test_field_values_have_the_prior_variance() -> None:
    # points far apart (a 5 km cube against scale lengths of 10-30 pc) are nearly independent draws of g: their
    # mean is 0 and their variance alpha, to the sampling error of 20 000 draws (sd of the variance ~1%)
    field = GaussianField(1e-3, GAMMA, ALPHA, seed=2)
    xyz = np.random.default_rng(0).uniform(-2500, 2500, (20_000, 3))
    g = field.log_density(xyz)
    assert abs(g.mean()) < 5 * np.sqrt(ALPHA / g.size)
    assert g.var() == pytest.approx(ALPHA, rel=0.05)


def test_density_is_the_background_times_ten_to_the_field() -> None:
    field = GaussianField(2e-3, GAMMA, ALPHA, seed=3)
    l, b, d = np.array([55.0, 62.0]), np.array([-3.0, 1.0]), np.array([200.0, 260.0])
    g = field.log_density(lbd_to_xyz(l, b, d))
    assert np.allclose(2e-3 + field.density_at(l, b, d), 2e-3 * 10.0**g)
    assert GaussianField(2e-3, GAMMA, ALPHA, seed=3).log_density(lbd_to_xyz(l, b, d)) == pytest.approx(g)


def test_simulate_draws_a_field_sky() -> None:
    sky = simulate(REGION, n_stars=300, structures="gaussian-field", field_scale=0.2, seed=4)
    (field,) = sky.structures
    assert isinstance(field, GaussianField)
    assert field.mean_density == sky.background
    assert field.scale == 0.2
    rho = sky.density_on(REGION)
    assert np.allclose(np.log10(rho / sky.background), field.log_density(REGION.cell_centers_xyz()).reshape(rho.shape))
    near = np.linspace(1.0, REGION.d_min - 1.0, 7)  # the foreground holds the background alone
    assert np.allclose(sky.density_at(np.full(7, 65.0), np.zeros(7), near), sky.background)
    # the field's features come from a stream of their own: the stars are those of any other sky of the seed
    other = simulate(REGION, n_stars=300, structures="realistic", seed=4)
    assert np.array_equal(sky.catalog.l, other.catalog.l)
    assert np.array_equal(sky.true_distance, other.true_distance)
    assert simulate(REGION, n_stars=300, structures="gaussian-field", seed=4).structures[0].seed == field.seed


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"field_scale": -0.1}, "field_scale"),
        ({"field_length_scale": (30.0, 0.0, 10.0)}, "field_length_scale"),
        ({"field_length_scale": (30.0, 10.0)}, "field_length_scale"),
    ],
)
def test_bad_field_options_are_named(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        simulate(REGION, n_stars=10, structures="gaussian-field", **options)


def test_a_field_has_no_single_sightline() -> None:
    field = GaussianField(1e-3, GAMMA, ALPHA)
    with pytest.raises(ValueError, match="give the sightline"):
        field.peak_distance()
    assert np.isfinite(field.peak_distance(60.0, 0.0, d_range=(150.0, 300.0)))


def test_cli_simulates_a_field(tmp_path: Path) -> None:
    out = tmp_path / "field.ecsv"
    args = ["simulate", str(out), "--n-stars", "200", "--structures", "gaussian-field", "--quiet"]
    assert main([*args, "--field-length-scale", "20,20,15", "--field-scale", "0.05", "--l", "60,70,10"]) == 0
    table = Table.read(out)
    assert len(table) == 200
    assert np.all(table["A0_true"] > 0)
    assert '"field_length_scale": [20.0, 20.0, 15.0]' in table.meta["dustgp_simulate"]
    with pytest.raises(SystemExit) as exit_info:  # argparse's one-line usage error
        main([*args, "--field-length-scale", "20,20"])
    assert exit_info.value.code == 2
