"""dustgp.fitting.exact_elbo: the closed-form ELBO of the second-order method."""

import math

import numpy as np
import pytest
import torch

from dustgp.fitting.exact_elbo import Geometry, NewtonProblem, evaluate, pack, rewhiten
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
