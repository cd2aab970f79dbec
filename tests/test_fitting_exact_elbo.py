"""dustgp.fitting.exact_elbo: the closed-form ELBO of the second-order method."""

import math

import numpy as np
import pytest
import torch

from dustgp.fitting.exact_elbo import (
    Geometry,
    NewtonProblem,
    evaluate,
    hyperparameter_fisher,
    pack,
    rewhiten,
    transport,
)
from dustgp.projection import rbf_cross_covariance
from fitting_skies import NEWTON_TRAIN, gaussian_statistics, newton_fit, newton_sky


@pytest.fixture(scope="module")
def sky():
    return newton_sky()


@pytest.fixture(scope="module")
def fitted():
    return newton_fit()


def test_expected_log_likelihood_matches_monte_carlo(sky) -> None:
    stats = gaussian_statistics(sky, NEWTON_TRAIN)
    rng = np.random.default_rng(0)
    n_col, n_d = NEWTON_TRAIN.n_columns, NEWTON_TRAIN.n_d
    mean = torch.as_tensor(rng.normal(-2.8, 0.2, (n_col, n_d)))
    root = torch.as_tensor(rng.normal(size=(n_col, n_d, n_d)) * 0.06)
    cov = root @ root.transpose(1, 2)
    exact = float(stats.expected_log_likelihood(mean, cov))
    n = 40_000
    phi = mean + (torch.linalg.cholesky(cov + 1e-12 * torch.eye(n_d)) @ torch.randn(n, n_col, n_d, 1).double())[..., 0]
    draws = stats.log_likelihood(torch.pow(10.0, phi).transpose(1, 2))
    # the Monte Carlo mean is within 5 standard errors of the closed form
    assert abs(float(draws.mean()) - exact) < 5 * float(draws.std()) / math.sqrt(n)


def test_theta_gradient_matches_finite_differences_at_fixed_q_u(sky) -> None:
    """The closed-form gradient of the ELBO in (c, ln alpha, ln gamma, z) at fixed q(u), against central
    differences of the exact ELBO (q rewhitened at each theta: the same q(u)). Step h = 1e-5 in float64: the
    truncation error is h² = 1e-10 of the derivative times the ratio of third to first derivative (allowed: 1e3),
    the rounding error eps |ELBO| / h per difference (allowed: 100 times, for the sums over cells and stars)."""
    stats = gaussian_statistics(sky, NEWTON_TRAIN)
    cells = torch.as_tensor(NEWTON_TRAIN.cell_centers_xyz()) / 100.0  # internal unit: 100 pc
    problem = NewtonProblem.build(cells, NEWTON_TRAIN.n_d, stats, fixed_z=None)
    gen = torch.Generator().manual_seed(8)
    m_size = 12
    z = cells[torch.randperm(cells.shape[0], generator=gen)[:m_size]] + 0.05 * torch.randn(m_size, 3, generator=gen)
    theta = pack(-2.7, 0.3, torch.tensor([0.35, 0.3, 0.4]), z)
    m = 0.5 * torch.randn(m_size, generator=gen, dtype=torch.float64)
    root = torch.randn(m_size, m_size, generator=gen, dtype=torch.float64) / m_size
    l_precision = torch.linalg.cholesky(torch.eye(m_size, dtype=torch.float64) * 3.0 + root @ root.T)
    geometry = Geometry.at(problem, theta)
    state = evaluate(problem, geometry, m, l_precision).with_gradients(problem)

    def elbo_at(shifted: torch.Tensor) -> float:
        moved = Geometry.at(problem, shifted)
        return evaluate(problem, moved, *rewhiten(geometry, moved, m, l_precision)).elbo

    h = 1e-5
    checked = [0, 1, 2, 3, 4, 5, 9, 5 + 3 * m_size - 1]  # c, ln alpha, ln gamma (3), three coordinates of z
    for i in checked:
        step = torch.zeros_like(theta)
        step[i] = h
        numeric = (elbo_at(theta + step) - elbo_at(theta - step)) / (2 * h)
        analytic = float(state.grad_theta[i])
        tolerance = 1e-7 * abs(analytic) + 100 * torch.finfo(torch.float64).eps * abs(state.elbo) / h
        assert abs(analytic - numeric) < tolerance, (i, analytic, numeric)


def _random_point(m_size: int = 12, seed: int = 8):
    """A problem on the test sky with random inducing locations, theta and a q whose precision is ⪰ I."""
    stats = gaussian_statistics(newton_sky(), NEWTON_TRAIN)
    cells = torch.as_tensor(NEWTON_TRAIN.cell_centers_xyz()) / 100.0  # internal unit: 100 pc
    problem = NewtonProblem.build(cells, NEWTON_TRAIN.n_d, stats, fixed_z=None)
    gen = torch.Generator().manual_seed(seed)
    z = cells[torch.randperm(cells.shape[0], generator=gen)[:m_size]] + 0.05 * torch.randn(m_size, 3, generator=gen)
    theta = pack(-2.7, 0.3, torch.tensor([0.35, 0.3, 0.4]), z)
    m = 0.5 * torch.randn(m_size, generator=gen, dtype=torch.float64)
    root = torch.randn(m_size, m_size, generator=gen, dtype=torch.float64)
    l_precision = torch.linalg.cholesky(torch.eye(m_size, dtype=torch.float64) + root @ root.T)
    return problem, theta, m, l_precision, gen


def test_transport_holds_the_site_of_q_in_u_space() -> None:
    """Against the same posterior built in u-space from the site's natural parameters: q(u) ∝ p(u | theta) t(u),
    t held, the prior moved to a new theta (c, alpha, gamma and z all changed). Both are float64 solves of
    well-conditioned 12 × 12 systems: agreement to 1e-8 (relative to the largest entry)."""
    problem, theta, m, l_precision, gen = _random_point()
    old = Geometry.at(problem, theta)
    assert torch.allclose(transport(old, old, m, l_precision)[0], m, atol=1e-10)  # the same theta: q unchanged
    new_theta = theta + 0.1 * torch.randn(theta.shape, generator=gen, dtype=torch.float64)
    new = Geometry.at(problem, new_theta)
    m_new, l_new, precision_new = transport(old, new, m, l_precision)

    m_size = m.shape[0]
    ones = torch.ones(m_size, dtype=torch.float64)
    c_old, c_new = float(theta[0]), float(new_theta[0])
    k_old_inv, k_new_inv = torch.cholesky_inverse(old.l_zz), torch.cholesky_inverse(new.l_zz)
    s_u = old.l_zz @ torch.cholesky_inverse(l_precision) @ old.l_zz.T
    p_u = torch.linalg.inv(s_u)
    site_precision = p_u - k_old_inv
    site_shift = p_u @ (c_old + old.l_zz @ m) - k_old_inv @ (c_old * ones)
    p_new = k_new_inv + site_precision
    mu_new = torch.linalg.solve(p_new, k_new_inv @ (c_new * ones) + site_shift)
    expected_m = torch.linalg.solve_triangular(new.l_zz, (mu_new - c_new)[:, None], upper=False)[:, 0]
    expected_precision = new.l_zz.T @ p_new @ new.l_zz
    precision = l_new @ l_new.T
    assert torch.allclose(precision_new, precision, atol=1e-12 * float(precision.abs().max()))  # Λ as factorised
    assert torch.allclose(m_new, expected_m, atol=1e-8 * float(expected_m.abs().max()))
    assert torch.allclose(precision, expected_precision, atol=1e-8 * float(expected_precision.abs().max()))
    # the directions the site leaves alone follow the prior: Λ_new - I = Rᵀ (Λ - I) R keeps the rank of Λ - I
    flat = torch.linalg.cholesky(torch.eye(m_size, dtype=torch.float64) + torch.diag(ones * (torch.arange(m_size) < 3)))
    _, l_flat, _ = transport(old, new, m, flat)
    rank = torch.linalg.matrix_rank(l_flat @ l_flat.T - torch.eye(m_size, dtype=torch.float64), atol=1e-9)
    assert int(rank) == 3


def test_hyperparameter_fisher_matches_the_pseudo_data_evidence() -> None:
    """The closed form against ½ tr(C⁻¹ ∂_i K C⁻¹ ∂_j K) and 1ᵀ C⁻¹ 1 with C = K + W⁻¹ built directly (W = the
    site precision S_u⁻¹ - K⁻¹) and ∂K from autograd of the kernel in (ln alpha, ln gamma); float64, well
    conditioned: 1e-6 relative."""
    problem, theta, m, l_precision, _ = _random_point()
    geometry = Geometry.at(problem, theta)
    state = evaluate(problem, geometry, m, l_precision)
    _, alpha, gamma, z = problem.unpack(theta)
    k_zz = rbf_cross_covariance(z, z, gamma, alpha)
    fisher = hyperparameter_fisher(z, gamma, k_zz, state._cache["t"])

    k_full = geometry.l_zz @ geometry.l_zz.T  # with the jitter, as T is
    s_u = geometry.l_zz @ torch.cholesky_inverse(l_precision) @ geometry.l_zz.T
    site = torch.linalg.inv(s_u) - torch.linalg.inv(k_full)
    c_inv = torch.linalg.inv(k_full + torch.linalg.inv(site))

    def kernel(log_scales: torch.Tensor) -> torch.Tensor:
        return rbf_cross_covariance(z, z, log_scales[1:].exp(), log_scales[0].exp())

    jac = torch.autograd.functional.jacobian(kernel, theta[1:5].clone())  # (M, M, 4)
    expected = torch.zeros(5, 5, dtype=torch.float64)
    for i in range(4):
        for j in range(4):
            expected[i + 1, j + 1] = 0.5 * torch.trace(c_inv @ jac[..., i] @ c_inv @ jac[..., j])
    ones = torch.ones(z.shape[0], dtype=torch.float64)
    expected[0, 0] = ones @ c_inv @ ones
    assert torch.allclose(fisher, expected, rtol=1e-6, atol=1e-8 * float(expected.abs().max()))
    assert bool((torch.linalg.eigvalsh(fisher) > 0).all())
