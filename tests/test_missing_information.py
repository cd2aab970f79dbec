"""The missing information of the stars' latent variables (Louis 1982) against the Hessian of their marginal."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import dustgp
from dustgp.catalog import lognormal_nodes
from dustgp.fitting.checkpoint import model_from_state
from dustgp.fitting.missing_information import missing_information_blocks
from dustgp.grid import Grid
from dustgp.likelihood import StarLikelihood, StarNodes
from dustgp.sightlines import GaussianStatistics
from dustgp.simulate import simulate

GRID = Grid(l=(60, 62, 2), b=(0, 1, 2), d=(100, 400, 6), ghost_cells=0)


def _stars(noise: str, k: int, **options) -> tuple[StarLikelihood, torch.Tensor]:
    """Stars on GRID with ``k`` distance nodes each, at a fixed density field (mag/pc, grid order)."""
    rng = np.random.default_rng(5)
    n = 40
    l, b, d = rng.uniform(60, 62, n), rng.uniform(0, 1, n), rng.uniform(150, 350, n)
    density = torch.as_tensor(10 ** rng.normal(-2.5, 0.4, GRID.n_cells))
    a = 0.003 * d + rng.normal(0, 0.08, n)
    a[:4] += 0.8  # a few stars far off, where the t's curvature turns negative and the mixture hesitates
    nodes = StarNodes.build(GRID, l, b, *lognormal_nodes(d, 0.15 * d if k > 1 else 1e-9 * d, k))
    return StarLikelihood(nodes, a, np.full(n, 0.05), noise=noise, learn_outlier_fraction=False, **options), density


def _marginal_hessian(like: StarLikelihood, density: torch.Tensor, s2: torch.Tensor) -> torch.Tensor:
    """The Hessian of ``Σ_i ln p(A_i | ρ)`` in ``u = ρ ℓ`` with each node's variance held at ``s2``, per column."""
    lengths = torch.as_tensor(GRID.path_lengths, dtype=torch.float64)
    per_cell = lengths.repeat_interleave(GRID.n_columns)  # grid order: distance bins outermost

    def log_marginal(u: torch.Tensor) -> torch.Tensor:
        model = like.nodes.sightlines.extinction(u / per_cell)
        e = (like.a - model) ** 2 / s2
        if like.noise == "student-t":
            nu = like.nu
            log_l = -0.5 * (nu + 1.0) * torch.log1p(e / nu) - 0.5 * torch.log(s2)
        else:
            log_l = -0.5 * e - 0.5 * torch.log(2 * np.pi * s2)
        log_joint = torch.as_tensor(like.nodes.log_prior) + log_l
        peak = torch.full((like.n_stars,), -np.inf, dtype=log_joint.dtype)
        peak = peak.scatter_reduce(0, like.star, log_joint.detach(), reduce="amax")
        total = torch.zeros_like(peak).index_add(0, like.star, torch.exp(log_joint - peak[like.star]))
        log_inlier = peak + torch.log(total)
        if like.noise == "mixture":
            eps = like.outlier_fraction
            outlier = torch.full_like(log_inlier, np.log(eps) + like.log_outlier_density)
            log_inlier = torch.logaddexp(log_inlier + np.log1p(-eps), outlier)
        return log_inlier.sum()

    hessian = torch.autograd.functional.hessian(log_marginal, density * per_cell)
    n_d, n_col = GRID.n_d, GRID.n_columns
    blocks = hessian.reshape(n_d, n_col, n_d, n_col)
    return torch.stack([blocks[:, j, :, j] for j in range(n_col)])


def _complete_information(like: StarLikelihood) -> torch.Tensor:
    """``Σ_k w_k e_k e_kᵀ`` per column: what the fit's Gauss-Newton curvature counts, in u."""
    stats = GaussianStatistics.from_node_weights(
        GRID, like.grid_cell, like.fraction, like.a, like.node_weights(), constant=0.0, n_stars=like.n_stars
    )
    return stats.column_blocks()[0]


@pytest.mark.parametrize(
    ("noise", "k"), [("gaussian", 8), ("mixture", 8), ("mixture", 1), ("student-t", 1), ("gaussian", 1)]
)
def test_complete_less_missing_information_is_the_marginal_curvature(noise: str, k: int) -> None:
    like, density = _stars(noise, k, nu=4.0, outlier_fraction=0.1)
    model = like.nodes.sightlines.extinction(density)
    like.update_nodes(model, model * model, rounds=200)  # a known map: the latents' posteriors at it, exactly
    missing = missing_information_blocks(like, model)
    curvature = -_marginal_hessian(like, density, like.node_sigma2.detach())
    expected_missing = _complete_information(like) - curvature
    scale = float(curvature.abs().max())
    np.testing.assert_allclose(missing.numpy(), expected_missing.numpy(), atol=1e-9 * scale)
    if noise == "gaussian" and k == 1:
        assert float(missing.abs().max()) < 1e-12 * scale  # nothing is latent: nothing is missing
    else:
        assert float(missing.abs().max()) > 1e-3 * scale


SMALL_GRID = Grid(l=(60, 70, 5), b=(-4, 4, 4), d=(150, 300, 8), ghost_cells=1)


def _small_fit(**options) -> dustgp.Fit:
    region = Grid(l=(60, 70, 20), b=(-4, 4, 10), d=(150, 300, 30), ghost_cells=0)
    sky = simulate(region, n_stars=3000, n_clumps=2, distance_errors=(0.1, 0.2), seed=3)
    return dustgp.fit(sky.catalog, SMALL_GRID, inducing_points=60, seed=1, progress=False, **options)


def _band_width(fitted: dustgp.Fit) -> float:
    """Median 16-84% band width of log10 density, dex."""
    dmap = fitted.predict(SMALL_GRID, samples=200, progress=False, seed=5)
    lo, hi = (np.log10(dmap.density(q).value) for q in (16, 84))
    return float(np.median(hi - lo))


def test_a_fit_with_distance_nodes_widens_its_bands_and_its_checkpoint_keeps_them(tmp_path) -> None:
    checkpoint = tmp_path / "fit.ckpt"
    fitted = _small_fit(checkpoint=checkpoint)
    corrected, mean_field = _band_width(fitted), _band_width(_small_fit(missing_information=False))
    # 200 samples put a band's edges to ~3% of its width; the stars' uncertain distances take far more
    assert corrected > 1.1 * mean_field
    gp = fitted.model
    assert gp.marginal_scale_tril.shape == (60, 60)
    assert not torch.equal(gp.posterior_scale_tril(), gp.variational_scale_tril())  # q itself is kept
    # a map made later from the checkpoint has the fit's bands, and a resume continues from the same q
    loaded = dustgp.load_fit(checkpoint)
    torch.testing.assert_close(loaded.model.posterior_scale_tril(), gp.posterior_scale_tril())
    torch.testing.assert_close(loaded.model.variational_scale_tril(), gp.variational_scale_tril())
    assert _band_width(loaded) == pytest.approx(corrected, rel=1e-9)
    # resumed, a finished fit continues from the mean-field q and is corrected anew at its end
    resumed = _small_fit(resume=checkpoint)
    assert resumed.model.marginal_scale_tril.shape == (60, 60)
    assert _band_width(resumed) == pytest.approx(corrected, rel=0.05)


def test_a_checkpoint_without_the_marginal_factor_loads_with_q_alone(tmp_path) -> None:
    fitted = _small_fit(max_iterations=3)
    state = {k: v for k, v in fitted.model.state_dict().items() if k != "marginal_scale_tril"}  # as before it
    gp = model_from_state(state, fitted.config)
    assert gp.marginal_scale_tril.numel() == 0
    torch.testing.assert_close(gp.posterior_scale_tril(), fitted.model.variational_scale_tril())
