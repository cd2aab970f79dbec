"""Star likelihoods: distance quadrature, Student-t and outlier mixture, their latent updates and the predictive."""

import itertools
import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

import dustgp
from dustgp.catalog import lognormal_nodes
from dustgp.grid import Grid
from dustgp.likelihood import StarLikelihood, StarNodes
from dustgp.sightlines import Sightlines, cell_extinction_moments
from dustgp.simulate import simulate

GRID = Grid(l=(60, 62, 2), b=(0, 1, 1), d=(100, 400, 30), ghost_cells=0)


COLUMN = Grid(l=(60, 61, 1), b=(0, 1, 1), d=(100, 500, 80), ghost_cells=0)


def _column_likelihood(a_obs: float, d: float, d_err: float, k: int) -> tuple[float, float]:
    """ln p(A | rho) of one star on one column holding a cloud at 250 pc: the quadrature and the brute-force integral.

    The density is 1e-3 mag/pc plus a cloud of 0.6 mag in a Gaussian of 12 pc at 250 pc: steep against the
    distance uncertainty (slope up to 0.02 mag/pc).
    """
    centres = COLUMN.d_centers
    rho = 1e-3 + 0.6 * np.exp(-0.5 * ((centres - 250.0) / 12.0) ** 2) / (12.0 * math.sqrt(2 * math.pi))
    density = torch.as_tensor(rho)
    posterior = lognormal_nodes(np.array([d]), np.array([d_err]), k)
    nodes = StarNodes.build(COLUMN, np.array([60.5]), np.array([0.5]), *posterior)
    like = StarLikelihood(nodes, np.array([a_obs]), np.array([0.03]), noise="gaussian")
    quad = float(like.log_likelihood(density))
    # brute force: the model's piecewise-linear extinction on 20,000 distances, weighted by the log-normal posterior
    s = math.asinh(d_err / d)
    x = np.linspace(math.log(d) - 7 * s, math.log(d) + 7 * s, 20_000)
    fine = Sightlines.from_positions(COLUMN, np.full(x.size, 60.5), np.full(x.size, 0.5), np.exp(x))
    model = fine.extinction(density).numpy()
    prior = stats.norm.pdf(x[fine.star_index], math.log(d), s)
    exact = math.log(integrate.trapezoid(prior * stats.norm.pdf(a_obs, model, 0.03), x[fine.star_index]))
    return quad, exact


@pytest.mark.parametrize(("a_obs", "d", "frac"), [(0.5, 250.0, 0.05), (0.4, 240.0, 0.12), (0.7, 280.0, 0.1)])
def test_distance_quadrature_matches_the_integral(a_obs: float, d: float, frac: float) -> None:
    # a cloud inside the distance posterior: 16 nodes give the marginal likelihood to 10%, 8 to 25% (0.1, 0.22 in ln)
    for k, tol in ((8, 0.22), (16, 0.1)):
        quad, exact = _column_likelihood(a_obs, d, frac * d, k)
        assert quad == pytest.approx(exact, abs=tol)


def test_distance_quadrature_converges_with_nodes() -> None:
    errors = [abs(np.subtract(*_column_likelihood(0.5, 250.0, 25.0, k))) for k in (4, 16, 64)]
    assert errors[2] < errors[1] < errors[0]
    assert errors[2] < 0.01


def _likelihood(noise: str, *, nodes_k: int = 1, **options) -> tuple[StarLikelihood, np.ndarray]:
    rng = np.random.default_rng(4)
    n = 300
    l, b = rng.uniform(60, 62, n), rng.uniform(0, 1, n)
    d = rng.uniform(120, 380, n)
    a = 0.002 * d + rng.normal(0, 0.05, n)
    a[:10] += 1.0  # outliers
    sigma = np.full(n, 0.05)
    if nodes_k > 1:
        nodes = StarNodes.build(GRID, l, b, *lognormal_nodes(d, 0.1 * d, nodes_k))
    else:
        lines = Sightlines.from_positions(GRID, l, b, d)
        assert len(lines) == n
        nodes = StarNodes(lines, np.arange(n), np.zeros(n), n)
    return StarLikelihood(nodes, a, sigma, noise=noise, **options), a


def _density(seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.as_tensor(10 ** rng.normal(-2.7, 0.1, (GRID.n_d, GRID.n_columns)))


@pytest.mark.parametrize("noise", ["gaussian", "student-t", "mixture"])
def test_log_likelihood_matches_the_closed_forms(noise: str) -> None:
    like, a = _likelihood(noise, nu=3.0, outlier_fraction=0.05)
    rho = _density()
    model = like.nodes.sightlines.extinction(rho.reshape(-1)).numpy()
    if noise == "gaussian":
        expected = stats.norm.logpdf(a, model, 0.05).sum()
    elif noise == "student-t":
        expected = stats.t.logpdf(a, 3.0, model, 0.05).sum()
    else:
        span = np.ptp(a) + 2 * 0.05
        expected = np.log(0.95 * stats.norm.pdf(a, model, 0.05) + 0.05 / span).sum()
    assert float(like.log_likelihood(rho.reshape(-1))) == pytest.approx(expected, rel=1e-10)


def test_distance_marginal_matches_the_node_average() -> None:
    like, a = _likelihood("gaussian", nodes_k=6)
    rho = _density(1)
    model = like.nodes.sightlines.extinction(rho.reshape(-1)).numpy()
    star = like.nodes.star
    span = np.zeros_like(model)
    for i in range(like.n_stars):  # each node's spread: the central difference to its neighbours (one-sided at ends)
        rows = np.flatnonzero(star == i)
        if rows.size > 1:
            span[rows] = np.gradient(model[rows])
    sigma = np.sqrt(0.05**2 + span**2 / 12)
    per_node = np.exp(like.nodes.log_prior) * stats.norm.pdf(a[star], model, sigma)
    expected = np.log(np.bincount(like.nodes.star, weights=per_node, minlength=like.n_stars)).sum()
    assert float(like.log_likelihood(rho.reshape(-1))) == pytest.approx(expected, rel=1e-10)


def test_moment_treatment_widens_sigma_by_the_model_slope() -> None:
    """``distance_uncertainty="moment"``: σ_i² + (ρ σ_d)² with ρ = E[u_J] / ℓ_J, the mean density of the star's cell
    (closed form), and the node weights follow it."""
    like, _ = _likelihood("gaussian", moment_distance_err=np.full(300, 12.0))
    rng = np.random.default_rng(6)
    mean = torch.as_tensor(rng.normal(-2.6, 0.2, (GRID.n_columns, GRID.n_d)))
    cov = torch.diag_embed(torch.full((GRID.n_columns, GRID.n_d), 0.01, dtype=torch.float64))
    lengths = torch.as_tensor(GRID.path_lengths)
    moments = cell_extinction_moments(mean, cov, lengths)
    like.update(moments)
    lines = like.nodes.sightlines
    rho = moments[1].numpy()[lines.column, lines.cell] / GRID.path_lengths[lines.cell]
    np.testing.assert_allclose(like.sigma2.numpy(), 0.05**2 + (rho * 12.0) ** 2, rtol=1e-12)
    np.testing.assert_allclose(like.node_weights().numpy(), 1.0 / like.node_sigma2.numpy(), rtol=1e-12)


def test_cell_moments_match_monte_carlo() -> None:
    rng = np.random.default_rng(2)
    n_col, n_d = 3, 6
    mean = torch.as_tensor(rng.normal(-2.5, 0.2, (n_col, n_d)))
    root = torch.as_tensor(rng.normal(size=(n_col, n_d, n_d)) * 0.08)
    cov = root @ root.transpose(1, 2)
    lengths = torch.full((n_d,), 10.0, dtype=torch.float64)
    exact = cell_extinction_moments(mean, cov, lengths)
    n = 400_000
    phi = mean + (torch.linalg.cholesky(cov + 1e-12 * torch.eye(n_d)) @ torch.randn(n, n_col, n_d, 1).double())[..., 0]
    u = torch.pow(10.0, phi) * lengths
    front = torch.cumsum(u, -1) - u
    draws = torch.stack([front, u, front * front, front * u, u * u])
    mc, se = draws.mean(1), draws.std(1) / math.sqrt(n)
    assert torch.all((mc - exact).abs() < 5 * se + 1e-12)


@pytest.mark.parametrize("noise", ["gaussian", "mixture"])
def test_latent_update_is_tight_for_a_known_map(noise: str) -> None:
    # with q(rho) a point mass, the optimal latent posteriors make the bound equal to the exact log-likelihood
    like, _ = _likelihood(noise, nodes_k=5, outlier_fraction=0.05, learn_outlier_fraction=False)
    rho = _density(3)
    mean = torch.log10(rho).T.contiguous()  # (n_columns, n_d)
    cov = torch.zeros(GRID.n_columns, GRID.n_d, GRID.n_d, dtype=torch.float64)
    lengths = torch.as_tensor(GRID.path_lengths)
    like.update(cell_extinction_moments(mean, cov, lengths))
    stats_ = like.statistics()
    bound = float(stats_.expected_log_likelihood(mean, cov))
    assert bound == pytest.approx(float(like.log_likelihood(rho.reshape(-1))), rel=1e-9)


def test_student_t_update_is_a_lower_bound_that_rises() -> None:
    like, _ = _likelihood("student-t", nodes_k=3, nu=4.0)
    rho = _density(5)
    mean = torch.log10(rho).T.contiguous()
    cov = torch.zeros(GRID.n_columns, GRID.n_d, GRID.n_d, dtype=torch.float64)
    moments = cell_extinction_moments(mean, cov, torch.as_tensor(GRID.path_lengths))
    exact = float(like.log_likelihood(rho.reshape(-1)))
    bounds = []
    for _ in range(4):
        like.update(moments, rounds=1)
        bounds.append(float(like.statistics().expected_log_likelihood(mean, cov)))
    assert all(b <= exact + 1e-9 for b in bounds)
    assert all(b2 >= b1 - 1e-9 for b1, b2 in itertools.pairwise(bounds))
    # outliers get small weights: the IRLS weights of the t
    assert float(like.weight[:10].max()) < 0.1 < float(like.weight[10:].median())


REGION = Grid(l=(60, 80, 30), b=(-5, 5, 15), d=(150, 350, 30), ghost_cells=0)
TRAIN = Grid(l=(60, 80, 6), b=(-5, 5, 3), d=(150, 350, 8), ghost_cells=1)
SMALL = {"inducing_points": 60, "length_scale": 25.0, "seed": 3, "max_iterations": 120}


def _clump_sky(**options: float):
    """2500 stars around one 25 pc clump, sigma_A = sqrt(0.05² + (0.05 A)²)."""
    return simulate(
        REGION,
        n_stars=2500,
        n_clumps=1,
        clump_sigma=(25, 25),
        clump_peak=(1.5e-2, 1.5e-2),
        noise=0.05,
        noise_floor=0.05,
        seed=8,
        **options,
    )


@pytest.fixture(scope="module")
def outlier_sky():
    return _clump_sky(outlier_fraction=0.05)


def test_mixture_flags_the_outliers(outlier_sky) -> None:
    fitted = dustgp.fit(outlier_sky.catalog, TRAIN, progress=False, likelihood="mixture", **SMALL)
    assert fitted.converged
    table = fitted.star_checks
    truth = outlier_sky.outlier[table["row_index"]]
    flagged = np.asarray(table["flagged"])
    assert np.sum(flagged & truth) >= 0.8 * np.sum(truth)  # recall
    assert np.sum(flagged & ~truth) <= 0.5 * np.sum(truth)  # and not every star
    summary = fitted.posterior_predictive()
    # the fitted fraction is the outliers' (5%) within its binomial spread and the few missed small offsets
    assert 0.03 < summary["outlier_fraction"] < 0.08
    assert set(table.colnames) >= {"row_index", "pit", "normalised_residual", "outlier_probability", "flagged"}


@pytest.mark.parametrize("noise", ["gaussian", "student-t", "mixture"])
def test_predictive_is_calibrated_when_the_map_is_the_truth(noise: str) -> None:
    # stars drawn from a known map with Gaussian noise; q(rho) a point mass on that map: the PIT is uniform
    rng = np.random.default_rng(11)
    n = 4000
    l, b, d = rng.uniform(60, 62, n), rng.uniform(0, 1, n), rng.uniform(110, 390, n)
    rho = _density(7)
    lines = Sightlines.from_positions(GRID, l, b, d)
    a = lines.extinction(rho.reshape(-1)).numpy() + rng.normal(0, 0.05, n)
    like = StarLikelihood(StarNodes(lines, np.arange(n), np.zeros(n), n), a, np.full(n, 0.05), noise=noise, nu=30.0)
    mean = torch.log10(rho).T.contiguous()
    cov = torch.zeros(GRID.n_columns, GRID.n_d, GRID.n_d, dtype=torch.float64)
    moments = cell_extinction_moments(mean, cov, torch.as_tensor(GRID.path_lengths))
    like.update(moments)
    checks = like.predictive(moments)
    inside = np.mean((checks["pit"] > 0.16) & (checks["pit"] < 0.84))
    assert abs(inside - 0.68) < 3 * math.sqrt(0.68 * 0.32 / n)  # binomial, 3 sigma
    assert stats.kstest(checks["normalised_residual"], "norm").pvalue > 1e-3
    assert np.mean(checks["flagged"]) < 0.01


def test_the_m_step_recovers_a_known_model_scatter() -> None:
    # stars on a known map whose extinctions scatter by sqrt(σ² + τ² + f² A²) while only σ is quoted
    rng = np.random.default_rng(11)
    n, sigma, floor, fraction = 4000, 0.02, 0.05, 0.2
    l, b, d = rng.uniform(60, 62, n), rng.uniform(0, 1, n), rng.uniform(110, 390, n)
    rho = _density(7)
    lines = Sightlines.from_positions(GRID, l, b, d)
    model = lines.extinction(rho.reshape(-1)).numpy()
    s2 = sigma**2 + floor**2 + (fraction * model) ** 2
    a = model + rng.normal(0.0, 1.0, n) * np.sqrt(s2)
    like = StarLikelihood(
        StarNodes(lines, np.arange(n), np.zeros(n), n), a, np.full(n, sigma), noise="gaussian", learn_scatter=True
    )
    mean = torch.log10(rho).T.contiguous()
    cov = torch.zeros(GRID.n_columns, GRID.n_d, GRID.n_d, dtype=torch.float64)
    moments = cell_extinction_moments(mean, cov, torch.as_tensor(GRID.path_lengths))
    for _ in range(3):  # each update takes two scoring steps from the last
        like.update(moments)
    # the maximum-likelihood (τ², f²) scatter by the inverse Fisher information, ½ Σ g gᵀ / s⁴ with g = (1, A²)
    g = np.stack([np.ones(n), model**2])
    sd = np.sqrt(np.diag(np.linalg.inv(0.5 * (g / s2) @ (g / s2).T)))
    learned = np.square(like.scatter)
    assert abs(learned[0] - floor**2) < 4 * sd[0]
    assert abs(learned[1] - fraction**2) < 4 * sd[1]


def test_learned_scatter_calibrates_the_stars_predictive() -> None:
    # the outlier-free sky, its extinctions scattered by a further 30% of the truth that the catalogue does not quote
    sky = _clump_sky()
    c, fraction = sky.catalog, 0.3
    scattered = c.extinction + fraction * sky.true_extinction * np.random.default_rng(5).normal(size=len(c))
    catalog = dustgp.Catalog.from_arrays(c.l, c.b, c.distance, scattered, c.extinction_err)
    fitted = dustgp.fit(catalog, TRAIN, progress=False, likelihood="gaussian", learn_scatter=True, **SMALL)
    assert fitted.converged
    # f within 4 sd of its Fisher information at the truth (the floor τ is not identified next to σ ≈ 0.05 mag)
    truth, s2 = sky.true_extinction, c.extinction_err**2 + (fraction * sky.true_extinction) ** 2
    sd_f2 = 1.0 / np.sqrt(0.5 * np.sum(truth**4 / s2**2))
    assert abs(fitted.scatter[1] ** 2 - fraction**2) < 4 * sd_f2
    inside = fitted.posterior_predictive()["inside_16_84"]
    n = fitted.posterior_predictive()["n_stars"]
    assert abs(inside - 0.68) < 3 * math.sqrt(0.68 * 0.32 / n)  # binomial, 3 sigma
    assert fitted.posterior_predictive()["scatter"] == list(fitted.scatter)


def test_every_step_raises_the_elbo_with_latent_variables(outlier_sky) -> None:
    fitted = dustgp.fit(
        outlier_sky.catalog, TRAIN, progress=False, likelihood="student-t", **{**SMALL, "max_iterations": 25}
    )
    assert np.all(np.diff(-fitted.losses) > 0)


def test_distance_quadrature_needs_distance_errors(outlier_sky) -> None:
    with pytest.raises(dustgp.FitError, match="distance_err"):
        dustgp.fit(outlier_sky.catalog, TRAIN, progress=False, distance_uncertainty="quadrature", **SMALL)


def test_bad_likelihood_options_are_refused() -> None:
    for options, match in [
        ({"likelihood": "cauchy"}, "likelihood"),
        ({"nu": -1.0}, "nu"),
        ({"outlier_fraction": 0.9}, "outlier_fraction"),
        ({"error_floor": -0.1}, "error_floor"),
        ({"distance_uncertainty": "guess"}, "distance_uncertainty"),
        ({"distance_nodes": 0}, "distance_nodes"),
        ({"scatter": [0.1, -0.2]}, "scatter"),
        ({"scatter": [0.1]}, "scatter"),
        ({"learn_scatter": True, "method": "svi"}, "learn_scatter"),
    ]:
        with pytest.raises(ValueError, match=match):
            dustgp.FitConfig(**options)


def test_svi_fits_the_robust_likelihood_and_reports_checks(outlier_sky) -> None:
    fitted = dustgp.fit(
        outlier_sky.catalog,
        TRAIN,
        progress=False,
        method="svi",
        likelihood="mixture",
        outlier_fraction=0.05,
        particles=8,
        **{**SMALL, "max_iterations": 40},
    )
    table = fitted.star_checks
    assert len(table) == fitted.stars["used"]
    assert np.all(np.isfinite(table["pit"]))
    assert fitted.posterior_predictive()["outlier_fraction"] == 0.05  # SVI keeps it fixed
