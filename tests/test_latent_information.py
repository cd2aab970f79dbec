"""The latents' missing information as the mean-field gap of the ELBO, and the objective that counts it."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import dustgp
from dustgp.catalog import lognormal_nodes
from dustgp.fitting.latent_information import missing_information_phi
from dustgp.grid import Grid
from dustgp.likelihood import StarLikelihood, StarNodes
from dustgp.sightlines import cell_extinction_moments
from dustgp.simulate import simulate

GRID = Grid(l=(60, 62, 2), b=(0, 1, 2), d=(100, 400, 6), ghost_cells=0)
DRAWS = 20_000


def _stars(noise: str) -> tuple[StarLikelihood, torch.Tensor]:
    """40 stars with 15% distance errors (8 nodes each) and a log10 density field on GRID, grid order."""
    rng = np.random.default_rng(5)
    n = 40
    l, b, d = rng.uniform(60, 62, n), rng.uniform(0, 1, n), rng.uniform(150, 350, n)
    phi = torch.as_tensor(rng.normal(-2.5, 0.4, GRID.n_cells))
    a = 0.003 * d + rng.normal(0, 0.08, n)
    a[:4] += 0.8  # a few stars far off, which the mixture hesitates over
    nodes = StarNodes.build(GRID, l, b, *lognormal_nodes(d, 0.15 * d, 8))
    like = StarLikelihood(nodes, a, np.full(n, 0.05), noise=noise, outlier_fraction=0.1, learn_outlier_fraction=False)
    return like, phi


def _latent_log_posterior(like: StarLikelihood, model: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ln p(node k, inlier | ρ, A_i) per node and ln p(outlier | ρ, A_i) per star, at model extinctions
    ``(draws, n_nodes)``, with each node's variance held where the last update left it."""
    s2 = like.node_sigma2
    log_joint = (
        torch.as_tensor(like.nodes.log_prior) - 0.5 * (like.a - model) ** 2 / s2 - 0.5 * torch.log(2 * math.pi * s2)
    )
    inlier = torch.full((len(model), like.n_stars), -math.inf, dtype=model.dtype)
    inlier = inlier.scatter_reduce(1, like.star.expand_as(log_joint), log_joint, reduce="amax")
    inlier = inlier + torch.log(
        torch.zeros_like(inlier).index_add(1, like.star, torch.exp(log_joint - inlier[:, like.star]))
    )
    outlier = torch.full_like(inlier, -math.inf)
    if like.noise == "mixture":
        eps = like.outlier_fraction
        inlier, outlier = inlier + math.log1p(-eps), outlier.fill_(math.log(eps) + like.log_outlier_density)
        log_joint = log_joint + math.log1p(-eps)
    norm = torch.logaddexp(inlier, outlier)
    return log_joint - norm[:, like.star], outlier - norm


@pytest.mark.parametrize("noise", ["gaussian", "mixture"])
def test_half_the_trace_is_the_mean_field_gap(noise: str) -> None:
    """``½ tr(Σ C)`` against E_q[KL(q(latents) ‖ p(latents | ρ, A))] by Monte Carlo over a Gaussian q of phi."""
    like, phi = _stars(noise)
    n_d, n_col, s = GRID.n_d, GRID.n_columns, 0.02  # dex: q's spread, as a well-constrained cell's
    mean = phi.view(n_d, n_col).T.contiguous()
    cov = (s**2 * torch.eye(n_d, dtype=torch.float64)).expand(n_col, n_d, n_d).contiguous()
    moments = cell_extinction_moments(mean, cov, torch.as_tensor(GRID.path_lengths, dtype=torch.float64))
    like.update(moments, rounds=100)  # the latents' mean-field optimum at this q
    predicted = 0.5 * float((cov * missing_information_phi(like, moments)).sum())

    draws = mean + s * torch.randn(DRAWS, n_col, n_d, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    model = like.nodes.sightlines.extinction(10.0 ** draws.transpose(1, 2).reshape(DRAWS, -1))
    log_node, log_outlier = _latent_log_posterior(like, model)
    r = like.responsibility
    r_out = 1.0 - torch.zeros(like.n_stars, dtype=r.dtype).index_add(0, like.star, r)
    kl = (r * (torch.log(r) - log_node)).sum(-1)
    if noise == "mixture":
        kl += (r_out * (torch.log(r_out) - log_outlier)).sum(-1)
    mc, standard_error = float(kl.mean()), float(kl.std()) / math.sqrt(DRAWS)
    assert predicted > 0.5  # nats: the distance nodes do carry information here
    # Monte Carlo noise, and the expansion's next order: relative O(s ln 10) ~ 5% at most, ~1% measured
    assert abs(mc - predicted) < 4 * standard_error + 0.05 * predicted


SMALL_GRID = Grid(l=(60, 70, 5), b=(-4, 4, 4), d=(150, 300, 8), ghost_cells=1)


@pytest.fixture(scope="module")
def blurred_sky():
    region = Grid(l=(60, 70, 20), b=(-4, 4, 10), d=(150, 300, 30), ghost_cells=0)
    return simulate(region, n_stars=3000, n_clumps=2, distance_errors=(0.1, 0.2), seed=3)


def _band_width(fitted: dustgp.Fit) -> float:
    """Median 16-84% band width of log10 density, dex."""
    dmap = fitted.predict(SMALL_GRID, samples=200, progress=False, seed=5)
    lo, hi = (np.log10(dmap.density(q).value) for q in (16, 84))
    return float(np.median(hi - lo))


def test_counting_the_missing_information_in_the_objective(blurred_sky) -> None:
    options = {"inducing_points": 60, "seed": 1, "progress": False, "learn_hyperparameters": False}
    counted = dustgp.fit(blurred_sky.catalog, SMALL_GRID, missing_information="objective", **options)
    # the latents' updates maximise the ELBO, not J, so J need not rise at every step; the fit reaches the fixed
    # point where q maximises J at the latents' optimum
    assert counted.converged
    assert counted.model.marginal_scale_tril.numel() == 0  # q itself ends corrected: no factor beside it
    at_end = dustgp.fit(blurred_sky.catalog, SMALL_GRID, **options)
    mean_field = dustgp.fit(blurred_sky.catalog, SMALL_GRID, missing_information=False, **options)
    # both correct q by the same information, one at every step, one at the end: the objective's bands lie near
    # the end-corrected ones (within what 200 samples and the information's change between the two q allow), far
    # from the uncorrected q's
    counted_width, at_end_width, mean_field_width = (_band_width(f) for f in (counted, at_end, mean_field))
    assert at_end_width > 1.05 * mean_field_width
    assert abs(counted_width - at_end_width) < 0.35 * (at_end_width - mean_field_width)
    # the objective counts what the ELBO leaves out: above the mean-field fit's ELBO, by a few nats per 100 stars
    assert -counted.losses[-1] > -mean_field.losses[-1]


def test_missing_information_takes_a_switch_or_objective() -> None:
    for value in ("end", 1, None):
        with pytest.raises(ValueError, match="missing_information"):
            dustgp.FitConfig(missing_information=value)
    assert dustgp.FitConfig(missing_information="objective").missing_information == "objective"
