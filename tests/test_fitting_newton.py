"""The second-order fitting method (method="newton"): its steps, its posterior and its resume."""

import logging
import math

import numpy as np
import pytest
import torch

import dustgp
from dustgp.fitting import loop
from dustgp.fitting.exact_elbo import Geometry, NewtonProblem, evaluate, pack
from dustgp.fitting.loop import coarse_start_grid
from dustgp.fitting.newton import NewtonOptimizer, NewtonRunner, newton_start
from dustgp.grid import Grid
from dustgp.sightlines import GaussianStatistics, Sightlines
from dustgp.validation import compare_to_truth
from fitting_skies import NEWTON_TRAIN, SMALL_NEWTON, clump_sky, gaussian_statistics, newton_fit, newton_sky


@pytest.fixture(scope="module")
def sky():
    return newton_sky()


@pytest.fixture(scope="module")
def fitted():
    return newton_fit()


def test_every_step_raises_the_elbo(fitted) -> None:
    elbo = -fitted.losses
    assert elbo.size > 5
    assert np.all(np.diff(elbo) > 0)


def test_fit_converges_and_maps_the_clump(sky, fitted) -> None:
    assert fitted.converged
    assert fitted.stopped_by == "converged"
    dmap = fitted.predict(NEWTON_TRAIN.refined(2), samples=100, progress=False)
    accuracy = compare_to_truth(dmap, sky)
    # 3000 stars with 10% noise on a 20 pc clump, 80 inducing points: the SVI fit of test_fit reaches ~10% / 30%
    assert accuracy.median_relative_error < 0.12
    assert accuracy.p90_relative_error < 0.35
    assert accuracy.underestimated_fraction < 0.10


def test_impossible_budget_is_not_converged(sky, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="dustgp.fitting"):
        result = dustgp.fit(sky.catalog, NEWTON_TRAIN, progress=False, max_iterations=2, **SMALL_NEWTON)
    assert not result.converged
    assert result.stopped_by == "max_iterations"
    assert any("did not converge" in r.getMessage() for r in caplog.records)


def test_a_prior_widened_beyond_any_turbulent_gas_is_warned_about(sky, caplog) -> None:
    # started at alpha = 9 dex² and stopped after two steps, the learned prior is still that wide
    with caplog.at_level(logging.WARNING, logger="dustgp.fitting"):
        result = dustgp.fit(
            sky.catalog, NEWTON_TRAIN, progress=False, max_iterations=2, **{**SMALL_NEWTON, "scale": 9.0}
        )
    assert result.prior_warning is not None
    assert any(r.getMessage() == result.prior_warning for r in caplog.records)


@pytest.mark.parametrize("foreground", ["auto", "ghost"])  # the empty foreground left out (the default), or kept
def test_stiff_sky_converges(foreground: str) -> None:
    # an empty foreground and sigma_A = 10% of A with no floor: stars just behind d_min have sigma ~ 1e-4 mag
    stiff = clump_sky(foreground=False)
    assert stiff.catalog.extinction_err.min() < 1e-3
    grid = NEWTON_TRAIN
    result = dustgp.fit(stiff.catalog, grid, progress=False, max_iterations=200, foreground=foreground, **SMALL_NEWTON)
    assert result.grid.ghost_cells == (0 if foreground == "auto" else 1)
    assert result.converged
    dmap = result.predict(grid.refined(2), samples=100, progress=False)
    assert compare_to_truth(dmap, stiff).median_relative_error < 0.15


def test_matches_the_laplace_posterior_when_nearly_linear(sky) -> None:
    # With a prior variance of 1e-4 dex², rho = 10^phi is linear in v to ~ln10·0.01 = 2%: the ELBO's optimum and
    # the Laplace approximation (mode, inverse Hessian) agree to that order. Tolerances: 0.05 prior sd on the
    # mean, 5% on the posterior sd (both a few times the nonlinearity).
    grid = Grid(l=(60, 80, 4), b=(-5, 5, 2), d=(150, 350, 8), ghost_cells=1)
    options = {**SMALL_NEWTON, "inducing_points": 24, "scale": 1e-4, "learn_hyperparameters": False, "mean": -2.75}
    result = dustgp.fit(sky.catalog, grid, progress=False, max_iterations=100, step_tol=1e-5, **options)
    gp = result.model
    stats = gaussian_statistics(sky, grid)
    cells = torch.as_tensor(grid.cell_centers_xyz()) / gp.length_unit
    with torch.no_grad():
        l_zz = gp.inducing_cholesky()
        a = torch.linalg.solve_triangular(l_zz, gp.cross_covariance(cells).T, upper=False).T
    c = float(gp.mean_module.constant.detach())

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
    cells = torch.as_tensor(NEWTON_TRAIN.cell_centers_xyz()) / gp.length_unit
    stats = GaussianStatistics.from_stars(
        Sightlines.from_positions(NEWTON_TRAIN, [70.0], [0.0], [250.0]), np.array([0.5]), np.array([0.05])
    )
    problem = NewtonProblem.build(cells, NEWTON_TRAIN.n_d, stats, fixed_z=None)
    theta, m, l_precision = newton_start(gp, problem)
    state = evaluate(problem, Geometry.at(problem, theta), m, l_precision)
    assert math.isfinite(state.elbo)
    assert torch.allclose(m, gp.variational_mean.detach().double())


def test_resume_continues_a_newton_fit(sky, tmp_path) -> None:
    ckpt = tmp_path / "fit.ckpt"
    first = dustgp.fit(sky.catalog, NEWTON_TRAIN, progress=False, max_iterations=4, checkpoint=ckpt, **SMALL_NEWTON)
    assert first.iterations == 4
    resumed = dustgp.fit(sky.catalog, NEWTON_TRAIN, progress=False, resume=ckpt, max_iterations=8)
    assert resumed.config.method == "newton"
    assert resumed.iterations == 8
    assert resumed.losses[-1] < first.losses[-1]


def test_a_resume_with_learned_outliers_takes_the_uninterrupted_steps(tmp_path) -> None:
    """The mixture's outlier fraction moves at every update of the latent posteriors; a resume repeats the last
    update from where it started, not from where it ended (once, a resume after step 5 of this fit ended 1.5 nats
    away from the uninterrupted fit at step 6). Tolerance: the checkpoint's Cholesky round trip (~1e-13 relative)."""
    small = dustgp.simulate(
        Grid(l=(60, 70, 6), b=(-4, 4, 3), d=(150, 300, 8), ghost_cells=0), n_stars=300, n_clumps=1, seed=4
    )
    grid = Grid(l=(60, 70, 3), b=(-4, 4, 2), d=(150, 300, 5), ghost_cells=1)
    options = {"method": "newton", "inducing_points": 20, "length_scale": 20.0, "stop": "none", "seed": 1}
    assert dustgp.FitConfig(**options).likelihood == "mixture"
    whole = dustgp.fit(small.catalog, grid, progress=False, max_iterations=6, **options)
    ckpt = tmp_path / "fit.ckpt"
    part = dustgp.fit(small.catalog, grid, progress=False, max_iterations=5, checkpoint=ckpt, **options)
    assert part.likelihood.update_start[0] != part.likelihood.outlier_fraction  # the last update moved it
    resumed = dustgp.fit(small.catalog, grid, progress=False, max_iterations=6, resume=ckpt)
    np.testing.assert_allclose(resumed.losses, whole.losses, rtol=1e-9)


def test_refused_location_steps_back_off_exponentially(sky) -> None:
    """The n-th location step refused in a row shrinks the radius by 4^(2^(n-1)), so the locations are held for 2,
    4, 8 steps before the next try; held steps do not count as taken ones, and a location step taken resets it."""
    stats = gaussian_statistics(sky, NEWTON_TRAIN)
    cells = torch.as_tensor(NEWTON_TRAIN.cell_centers_xyz()) / 100.0
    problem = NewtonProblem.build(cells, NEWTON_TRAIN.n_d, stats, fixed_z=None)
    z = cells[:10]
    theta = pack(-2.7, 0.3, torch.tensor([0.35, 0.3, 0.4]), z)
    eye = torch.eye(10, dtype=torch.float64)
    optimizer = NewtonOptimizer(problem, theta, torch.zeros(10, dtype=torch.float64), eye, warmup=0)
    minimum = NewtonOptimizer.MIN_LOCATION_STEP

    def held_steps_after_a_refusal() -> int:
        optimizer.location_radius = minimum
        optimizer._adapt(1.0, 0.0, held=False)  # the theta step was taken with the locations held: they were to blame
        steps = 0
        while optimizer.location_radius < minimum:
            optimizer._adapt(1.0, 1.0, held=True)
            steps += 1
        return steps

    assert [held_steps_after_a_refusal() for _ in range(4)] == [2, 4, 8, 16]
    optimizer._adapt(1.0, 1.0, held=False)  # a location step taken
    assert optimizer.location_refusals == 0
    assert held_steps_after_a_refusal() == 2


def test_coarse_start_grid_only_where_it_saves_work() -> None:
    config = dustgp.FitConfig(inducing_points=1000)
    section3 = Grid(l=(50, 90, 20), b=(-10, 10, 20), d=(180, 500, 35), ghost_cells=2)
    coarse = coarse_start_grid(section3, config)
    assert coarse is not None
    assert (coarse.n_l, coarse.n_b, coarse.d_max) == (10, 10, section3.d_max)
    # fewer than two coarse cells per inducing point: no coarse stage
    assert coarse_start_grid(NEWTON_TRAIN, dustgp.FitConfig(**SMALL_NEWTON)) is None
    assert coarse_start_grid(section3, dustgp.FitConfig(inducing_points=1000, coarse_start=False)) is None
    assert coarse_start_grid(section3, dustgp.FitConfig(inducing_points=1000, learn_hyperparameters=False)) is None


def test_coarse_start_continues_on_the_training_grid(sky, tmp_path, caplog, monkeypatch) -> None:
    """The coarse stage's fit is where the training grid's starts; there the inducing locations it learned are
    held and q alone takes one step, also when the fit is resumed."""
    ckpt = tmp_path / "fit.ckpt"
    fine = NEWTON_TRAIN.refined(2)  # halved again, it is NEWTON_TRAIN: 352 cells, more than two per inducing point
    assert coarse_start_grid(fine, dustgp.FitConfig(**SMALL_NEWTON)).n_cells == NEWTON_TRAIN.n_cells
    runners: list[NewtonRunner] = []

    class Recorded(NewtonRunner):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            runners.append(self)

    monkeypatch.setattr(loop, "NewtonRunner", Recorded)
    with caplog.at_level(logging.INFO, logger="dustgp.fitting"):
        staged = dustgp.fit(sky.catalog, fine, progress=False, checkpoint=ckpt, **SMALL_NEWTON)
    assert sum("coarse start" in r.getMessage() for r in caplog.records) == 1
    assert staged.converged
    assert np.all(np.diff(-staged.losses) > 0)
    coarse, training = runners
    assert coarse.problem.fixed_z is None
    assert coarse.optimizer.warmup == dustgp.FitConfig().warmup
    assert torch.equal(training.problem.fixed_z, coarse.gp.inducing_points.detach().to(torch.float64))
    assert training.optimizer.warmup == 1
    # it starts from the coarse fit's theta, z and q(v): as many steps without that start end lower (measured on
    # this sky: 12 steps from the coarse start reached 3943.4 nats, 12 steps without it 3880.9, and 39 steps to
    # their stop rule 3943.5)
    direct = dustgp.fit(
        sky.catalog, fine, progress=False, coarse_start=False, max_iterations=staged.iterations, **SMALL_NEWTON
    )
    assert runners[-1].problem.fixed_z is None  # without a coarse stage the training grid learns them
    assert -staged.losses[-1] > -direct.losses[-1]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="dustgp.fitting"):
        dustgp.fit(sky.catalog, fine, progress=False, resume=ckpt, max_iterations=staged.iterations + 2)
    assert not any("coarse start" in r.getMessage() for r in caplog.records)  # a resumed fit goes on where it was
    assert runners[-1].problem.fixed_z is not None


def test_a_theta_step_from_the_prior_is_finite(sky) -> None:
    """With q equal to the prior (S = I, m = 0) the stars have said nothing yet and the Fisher information of the
    pseudo-data is zero; a theta step taken there (no warm-up) must still be a finite step that raises the ELBO.

    The stars see the prior mean c directly, though: with the site empty every cell's phi moves with c, so c's
    information is the curvature of the ELBO along c, -d²ELBO/dc² (checked by central differences, step 10⁻³ dex:
    truncation error ~(h ln 10)²/12 ≈ 4 × 10⁻⁷ relative)."""
    stats = gaussian_statistics(sky, NEWTON_TRAIN)
    cells = torch.as_tensor(NEWTON_TRAIN.cell_centers_xyz()) / 100.0
    problem = NewtonProblem.build(cells, NEWTON_TRAIN.n_d, stats, fixed_z=None)
    gen = torch.Generator().manual_seed(2)
    z = cells[torch.randperm(cells.shape[0], generator=gen)[:10]]
    theta = pack(-2.7, 0.3, torch.tensor([0.35, 0.3, 0.4]), z)
    prior = torch.zeros(10, dtype=torch.float64), torch.eye(10, dtype=torch.float64)
    optimizer = NewtonOptimizer(problem, theta, *prior, warmup=0)
    assert float(optimizer.state.fisher[1:, 1:].abs().max()) < 1e-8

    def elbo(c: float) -> float:
        shifted = theta.clone()
        shifted[0] = c
        return evaluate(problem, Geometry.at(problem, shifted), *prior).elbo

    h = 1e-3
    curvature = -(elbo(-2.7 + h) - 2.0 * elbo(-2.7) + elbo(-2.7 - h)) / h**2
    assert float(optimizer.state.fisher[0, 0]) == pytest.approx(curvature, rel=1e-4)
    hyper, locations = optimizer._theta_directions(optimizer.state)
    assert bool(torch.isfinite(hyper).all())
    assert bool(torch.isfinite(locations).all())
    assert float(hyper.abs().max()) == pytest.approx(NewtonOptimizer.MAX_HYPER_STEP)
    moved = optimizer.step()
    assert moved is not None
    before, after = moved
    assert math.isfinite(after.elbo)
    assert after.elbo > before.elbo
    assert bool(torch.isfinite(after.theta).all())


def test_the_secant_ratio_compares_the_curvature_met_with_the_fishers() -> None:
    """ρ = sᵀy / sᵀIs over the five hyperparameters, y the fall of the gradient along the step, held to the bounds."""
    optimizer = NewtonOptimizer.__new__(NewtonOptimizer)
    optimizer.curvature_scale = 2.0
    fisher = torch.diag(torch.tensor([4.0, 1.0, 1.0, 1.0, 1.0], dtype=torch.float64))
    theta = torch.zeros(8, dtype=torch.float64)  # five hyperparameters and one inducing location
    step = torch.tensor([0.5, 0, 0, 0, 0, 9.0, 9.0, 9.0], dtype=torch.float64)  # the locations do not count
    old = type("State", (), {"theta": theta, "fisher": fisher, "grad_theta": torch.full((8,), 3.0).double()})
    low, high = NewtonOptimizer.SECANT_BOUNDS

    def ratio(times: float) -> float:
        """On a quadratic whose curvature is ``times`` the Fisher's, the gradient falls by ``times`` · I s."""
        fall = torch.cat([times * fisher @ step[:5], torch.zeros(3, dtype=torch.float64)])
        new = type("State", (), {"theta": theta + step, "grad_theta": old.grad_theta - fall})
        return optimizer.secant_ratio(old, new)

    assert ratio(3.0) == pytest.approx(3.0)
    assert ratio(0.5) == low  # a step never longer than Fisher scoring's
    assert ratio(-1.0) == low  # the gradient grew: no curvature to scale by
    assert ratio(1e3) == high
    held = type("State", (), {"theta": theta + torch.cat([torch.zeros(5), step[5:]]).double(), "grad_theta": theta})
    assert optimizer.secant_ratio(old, held) == 2.0  # no hyperparameter moved: unchanged


def test_short_location_steps_are_held_while_the_radius_grows_back(sky) -> None:
    """Below ``MIN_LOCATION_STEP`` a step moves the hyperparameters only, and the locations' radius doubles."""
    stats = gaussian_statistics(sky, NEWTON_TRAIN)
    cells = torch.as_tensor(NEWTON_TRAIN.cell_centers_xyz()) / 100.0
    problem = NewtonProblem.build(cells, NEWTON_TRAIN.n_d, stats, fixed_z=None)
    z = cells[torch.randperm(cells.shape[0], generator=torch.Generator().manual_seed(2))[:10]]
    theta = pack(-2.7, 0.3, torch.tensor([0.35, 0.3, 0.4]), z)
    optimizer = NewtonOptimizer(
        problem, theta, torch.zeros(10, dtype=torch.float64), torch.eye(10, dtype=torch.float64), warmup=0
    )
    radius = 0.4 * NewtonOptimizer.MIN_LOCATION_STEP
    optimizer.location_radius = radius
    before, after = optimizer.step()
    assert after.elbo > before.elbo
    assert not torch.equal(after.theta[:5], before.theta[:5])  # the hyperparameters moved
    assert torch.equal(after.theta[5:], before.theta[5:])  # the locations were held
    assert optimizer.location_radius == pytest.approx(2.0 * radius)
