"""dustgp.fitting.exact_elbo: the closed-form ELBO of the second-order method."""

import math

import numpy as np
import pytest
import torch

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
