"""The second-order fitting method (method="newton"): its closed-form ELBO, its steps and its posterior."""

import logging
import math

import numpy as np
import pytest
import torch

import dustgp
from dustgp import newton
from dustgp.fitting import _newton_start
from dustgp.grid import Grid
from dustgp.model import DustGP
from dustgp.sightlines import GaussianStatistics, Sightlines
from dustgp.simulate import simulate
from dustgp.validation import compare_to_truth

REGION = Grid(l=(60, 80, 40), b=(-5, 5, 20), d=(150, 350, 40), ghost_cells=0)
TRAIN = Grid(l=(60, 80, 8), b=(-5, 5, 4), d=(150, 350, 10), ghost_cells=1)
# the paper's likelihood: these tests are about the fitting method, tests/test_likelihood.py about the likelihoods
SMALL = {
    "method": "newton", "inducing_points": 80, "length_scale": 20.0, "seed": 3,
    "likelihood": "gaussian",
    "error_floor": 0.0,
}


@pytest.fixture(scope="module")
def sky():
    return simulate(REGION, n_stars=3000, n_clumps=1, clump_sigma=(22, 22), clump_peak=(1.5e-2, 1.5e-2), seed=5)


@pytest.fixture(scope="module")
def fitted(sky):
    return dustgp.fit(sky.catalog, TRAIN, progress=False, max_iterations=150, **SMALL)


def _statistics(sky, grid: Grid) -> GaussianStatistics:
    cat = sky.catalog
    lines = Sightlines.from_positions(grid, cat.l, cat.b, cat.distance)
    return GaussianStatistics.from_stars(lines, cat.extinction[lines.star_index], cat.extinction_err[lines.star_index])


def test_expected_log_likelihood_matches_monte_carlo(sky) -> None:
    stats = _statistics(sky, TRAIN)
    rng = np.random.default_rng(0)
    n_col, n_d = TRAIN.n_columns, TRAIN.n_d
    mean = torch.as_tensor(rng.normal(-2.8, 0.2, (n_col, n_d)))
    root = torch.as_tensor(rng.normal(size=(n_col, n_d, n_d)) * 0.06)
    cov = root @ root.transpose(1, 2)
    exact = float(stats.expected_log_likelihood(mean, cov))
    n = 40_000
    phi = mean + (torch.linalg.cholesky(cov + 1e-12 * torch.eye(n_d)) @ torch.randn(n, n_col, n_d, 1).double())[..., 0]
    draws = stats.log_likelihood(torch.pow(10.0, phi).transpose(1, 2))
    # the Monte Carlo mean is within 5 standard errors of the closed form
    assert abs(float(draws.mean()) - exact) < 5 * float(draws.std()) / math.sqrt(n)


def test_sampled_phi_has_the_projected_covariance() -> None:
    # joint samples c + K_xz L_zz⁻ᵀ v with v ~ N(m, S) have covariance A S Aᵀ, A = K_xz L_zz⁻ᵀ
    gen = torch.Generator().manual_seed(1)
    z = torch.rand(20, 3, generator=gen, dtype=torch.float64) * 60
    gp = DustGP(z, mean=-3.0, scale=0.3, length_scale=20.0)
    with torch.no_grad():
        gp.variational_strategy._variational_distribution.variational_mean.normal_(generator=gen)
        raw = gp.variational_strategy._variational_distribution.chol_variational_covar
        raw.copy_(torch.randn(20, 20, generator=gen, dtype=torch.float64).tril(-1) * 0.2)
        gp.variational_log_diag.copy_(torch.rand(20, generator=gen, dtype=torch.float64).log() * 0.5)
    x = (torch.rand(12, 3, generator=gen, dtype=torch.float64) * 60) / gp.length_unit
    n = 50_000
    with torch.no_grad():
        l_zz = gp.inducing_cholesky()
        phi = gp.phi(x, gp.projection(gp.sample_whitened(n, generator=gen), l_zz))
        a = torch.linalg.solve_triangular(l_zz, gp.cross_covariance(x).T, upper=False).T
        l_q = gp.variational_scale_tril()
        expected = a @ l_q @ l_q.T @ a.T
    sample = torch.cov(phi.T)
    diag = expected.diagonal()
    # standard error of a sample covariance: sqrt((Σ_jj Σ_kk + Σ_jk²) / n); 5 of them over 78 entries
    error = torch.sqrt((diag[:, None] * diag[None, :] + expected**2) / n)
    assert float(((sample - expected).abs() / error).max()) < 5.0


def test_every_step_raises_the_elbo(fitted) -> None:
    elbo = -fitted.losses
    assert elbo.size > 5
    assert np.all(np.diff(elbo) > 0)


def test_fit_converges_and_maps_the_clump(sky, fitted) -> None:
    assert fitted.converged
    assert fitted.stopped_by == "converged"
    dmap = fitted.predict(TRAIN.refined(2), samples=100, progress=False)
    accuracy = compare_to_truth(dmap, sky)
    # 3000 stars with 10% noise on a 20 pc clump, 80 inducing points: the SVI fit of test_fit reaches ~10% / 30%
    assert accuracy.median_relative_error < 0.12
    assert accuracy.p90_relative_error < 0.35
    assert accuracy.underestimated_fraction < 0.10


def test_impossible_budget_is_not_converged(sky, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="dustgp.fitting"):
        result = dustgp.fit(sky.catalog, TRAIN, progress=False, max_iterations=2, **SMALL)
    assert not result.converged
    assert result.stopped_by == "max_iterations"
    assert any("did not converge" in r.getMessage() for r in caplog.records)


def test_stiff_sky_converges() -> None:
    # an empty foreground and sigma_A = 10% of A with no floor: stars just behind d_min have sigma ~ 1e-4 mag
    region = Grid(l=(60, 80, 30), b=(-5, 5, 15), d=(150, 350, 40), ghost_cells=0)
    stiff = simulate(
        region, n_stars=3000, n_clumps=1, clump_sigma=(20, 20), clump_peak=(1e-2, 1e-2), foreground=False, seed=11
    )
    assert stiff.catalog.extinction_err.min() < 1e-3
    grid = Grid(l=(60, 80, 8), b=(-5, 5, 4), d=(150, 350, 10), ghost_cells=1)
    result = dustgp.fit(stiff.catalog, grid, progress=False, max_iterations=200, **SMALL)
    assert result.converged
    dmap = result.predict(grid.refined(2), samples=100, progress=False)
    assert compare_to_truth(dmap, stiff).median_relative_error < 0.15


def test_matches_the_laplace_posterior_when_nearly_linear(sky) -> None:
    # With a prior variance of 1e-4 dex², rho = 10^phi is linear in v to ~ln10·0.01 = 2%: the ELBO's optimum and
    # the Laplace approximation (mode, inverse Hessian) agree to that order. Tolerances: 0.05 prior sd on the
    # mean, 5% on the posterior sd (both a few times the nonlinearity).
    grid = Grid(l=(60, 80, 4), b=(-5, 5, 2), d=(150, 350, 8), ghost_cells=1)
    options = {**SMALL, "inducing_points": 24, "scale": 1e-4, "learn_hyperparameters": False, "mean": -2.75}
    result = dustgp.fit(sky.catalog, grid, progress=False, max_iterations=100, step_tol=1e-5, **options)
    gp = result.model
    stats = _statistics(sky, grid)
    cells = torch.as_tensor(grid.cell_centers_xyz()) / gp.length_unit
    with torch.no_grad():
        l_zz = gp.inducing_cholesky()
        a = torch.linalg.solve_triangular(l_zz, gp.cross_covariance(cells).T, upper=False).T
    c = float(gp.mean_module.constant)

    def log_posterior(v: torch.Tensor) -> torch.Tensor:
        rho = torch.pow(10.0, c + a @ v).reshape(grid.n_d, grid.n_columns)
        return stats.log_likelihood(rho) - 0.5 * v @ v

    v = torch.zeros(a.shape[1], dtype=torch.float64)
    for _ in range(30):  # Newton on the exact log posterior
        grad = torch.func.grad(log_posterior)(v)
        hess = torch.func.hessian(log_posterior)(v)
        v = v - torch.linalg.solve(hess, grad)
    covariance = torch.linalg.inv(-torch.func.hessian(log_posterior)(v))
    m = gp.variational_mean.detach()
    l_q = gp.variational_scale_tril().detach()
    sd = (l_q @ l_q.T).diagonal().sqrt()
    assert float((m - v).abs().max()) < 0.05
    assert float((sd / covariance.diagonal().sqrt() - 1).abs().max()) < 0.05


def test_band_widens_beyond_the_stars(fitted) -> None:
    # beyond d_max no star constrains the map: the band must widen toward the prior, not collapse onto its mean
    grid = Grid(l=(60, 80, 8), b=(-5, 5, 4), d=(150, 800, 40), ghost_cells=1)
    dmap = fitted.predict(grid, samples=400, progress=False)
    ratio = dmap.density(84).value / dmap.density(16).value
    d = dmap.grid.d_centers
    inside, beyond = ratio[(d > 180) & (d < 320)], ratio[d > 600]
    assert np.median(beyond) > np.median(inside)


def test_newton_state_round_trips_through_the_model(fitted) -> None:
    # the parameters written into the model are read back as the same point (checkpoints, resume)
    gp = fitted.model
    cells = torch.as_tensor(TRAIN.cell_centers_xyz()) / gp.length_unit
    stats = GaussianStatistics.from_stars(
        Sightlines.from_positions(TRAIN, [70.0], [0.0], [250.0]), np.array([0.5]), np.array([0.05])
    )
    problem = newton.NewtonProblem.build(cells, TRAIN.n_d, stats, fixed_z=None)
    theta, m, l_precision = _newton_start(gp, problem)
    state = newton.evaluate(problem, newton.Geometry.at(problem, theta), m, l_precision)
    assert math.isfinite(state.elbo)
    assert torch.allclose(m, gp.variational_mean.detach().double())


def test_resume_continues_a_newton_fit(sky, tmp_path) -> None:
    ckpt = tmp_path / "fit.ckpt"
    first = dustgp.fit(sky.catalog, TRAIN, progress=False, max_iterations=4, checkpoint=ckpt, **SMALL)
    assert first.iterations == 4
    resumed = dustgp.fit(sky.catalog, TRAIN, progress=False, resume=ckpt, max_iterations=8)
    assert resumed.config.method == "newton"
    assert resumed.iterations == 8
    assert resumed.losses[-1] < first.losses[-1]
