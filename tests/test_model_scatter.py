"""dustgp.model_scatter: the M step of the learned model scatter against a brute-force optimum."""

import numpy as np
import torch

from dustgp.model_scatter import SCATTER_MAX, scatter_m_step


def _problem(seed: int, n: int = 3000):
    rng = np.random.default_rng(seed)
    model = torch.as_tensor(rng.uniform(0.0, 2.0, n))
    base = 0.03**2 + torch.as_tensor(rng.uniform(0.0, 0.01, n))
    truth = base + 0.04**2 + (0.25 * model) ** 2
    residual2 = truth * torch.as_tensor(rng.normal(size=n)) ** 2
    r = torch.as_tensor(rng.uniform(0.2, 1.0, n))
    return base, residual2, r, model * model


def _negative(problem, tau2, f2) -> np.ndarray:
    """The objective at arrays of (τ², f²), mag² and 1."""
    base, residual2, r, square = (x.numpy() for x in problem)
    tau2, f2 = np.atleast_1d(tau2), np.atleast_1d(f2)
    out = np.empty(tau2.shape)
    for lo in range(0, tau2.size, 500):
        s2 = base + tau2[lo : lo + 500, None] + f2[lo : lo + 500, None] * square
        out[lo : lo + 500] = 0.5 * (np.log(s2) + residual2 / s2) @ r
    return out


def test_each_update_lowers_the_objective_and_reaches_the_brute_force_optimum() -> None:
    for seed in range(3):
        problem = _problem(seed)
        # on a grid of (τ², f²) around the truth: the optimum to one grid step
        steps = (0.01 / 100, 0.10 / 100)
        a, b = np.meshgrid(np.linspace(0.0, 0.01, 101), np.linspace(0.02, 0.12, 101), indexing="ij")
        values = _negative(problem, a.ravel(), b.ravel())
        best = np.unravel_index(np.argmin(values), a.shape)
        scatter = (0.0, 0.0)
        previous = _negative(problem, 0.0, 0.0)[0]
        for _ in range(4):
            scatter = scatter_m_step(*problem, scatter)
            value = _negative(problem, scatter[0] ** 2, scatter[1] ** 2)[0]
            assert value <= previous + 1e-9  # a generalised M step: never worse
            previous = value
        assert value <= values.min() + 1e-9
        assert abs(scatter[0] ** 2 - a[best]) <= steps[0]
        assert abs(scatter[1] ** 2 - b[best]) <= steps[1]


def test_the_scatter_stays_inside_its_bounds() -> None:
    base, residual2, r, square = _problem(0)
    huge = scatter_m_step(base, residual2 * 1e6, r, square, (0.0, 0.0), iterations=20)
    assert huge[0] <= SCATTER_MAX[0]
    assert huge[1] <= SCATTER_MAX[1]
    none = scatter_m_step(base, residual2 * 0.0, r, square, (1.0, 0.5), iterations=20)
    assert none == (0.0, 0.0)  # residuals below the quoted variance: no scatter
