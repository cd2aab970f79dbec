"""q's covariance from the stars' marginal likelihood: the information their latent variables do not carry.

The second-order fit gives each star's distance node k, outlier flag and Student-t scale λ a mean-field posterior
of their own (EM and IRLS, :mod:`dustgp.likelihood`). At its optimum, q(v)'s precision is the prior's plus the
*complete-data* information: every node star counted with its responsibility, as if its node were known. A star
whose node, flag and scale are summed over, as its likelihood ``p(A_i | ρ)`` is, informs less, by the variance of
its scores under their posterior (Louis 1982, J. R. Stat. Soc. B 44, 226):

.. math::

    I_\\mathrm{obs} = I_\\mathrm{complete} - \\sum_i \\mathrm{Var}_{q(k_i, \\lambda_i, o_i)}
        \\left[\\nabla \\ln p(A_i \\mid \\rho, k_i, \\lambda_i, o_i)\\right].

In ``u_j = ρ_j ℓ_j`` (mag) a node's score is ``λ (A_i - a_ik) / s_ik² e_ik``, with ``e_ik`` the node's sightline
weights (1 in front of its cell, the crossed fraction in it) and an outlier's score zero, so the variance is

.. math::

    E[\\lambda^2] \\sum_k r_{ik} h_{ik} h_{ik}^\\top - E[\\lambda]^2 \\bar h_i \\bar h_i^\\top, \\qquad
    h_{ik} = \\frac{A_i - a_{ik}}{s_{ik}^2} e_{ik}, \\quad \\bar h_i = \\sum_k r_{ik} h_{ik},

with ``r_ik = q_i(k, inlier)`` and each node's variance ``s_ik²`` held where the last update left it, as the fit's
Gauss-Newton curvature holds it. It is zero for a Gaussian star with one node. For a Student-t star the corrected
curvature is the t's own, ``(ν+1)(ν - x) / ((ν + x)² σ²)`` with ``x = (A - a)²/σ²``, where IRLS counts
``(ν+1) / ((ν + x) σ²)``; for a star whose nodes straddle a cloud it is the curvature of the node average. The same
correction is the linear response of mean-field variational Bayes (Giordano, Broderick & Jordan 2018, JMLR 19, 51):
mean-field posteriors are too narrow by the coupling they leave out.

The first term has the sightline structure of the Gaussian statistics (node weights ``E[λ²] r (A - a)² / s⁴``,
:meth:`~dustgp.sightlines.GaussianStatistics.column_blocks`); the second is a sum of one outer product per star,
formed in chunks of stars. Both live within sightline columns; ``∂u/∂phi = ln 10 u`` takes them to phi, and
``L_zz⁻¹ Kᵀ (·) K L_zz⁻ᵀ`` to the whitened inducing values, as the fit's curvature is. The corrected precision has
its eigenvalues floored at 1, the prior's (or at the fitted precision's least, where that is lower): where a
star's likelihood is not log-concave (a t star beyond ``√ν σ``, a star between two clouds) its curvature may be
negative, but no direction is let know less than the prior. Computed once, when a newton fit ends
(``FitConfig.missing_information``), and kept beside q (:meth:`dustgp.model.DustGP.set_marginal`, in the model's
state and so in checkpoints): maps are drawn with it, while a resumed fit continues from the mean-field q it left.
SVI needs none: its ELBO takes the marginal per draw.
"""

from __future__ import annotations

import logging

import torch

from ..likelihood import StarLikelihood
from ..sightlines import LN10, GaussianStatistics
from .exact_elbo import DTYPE, NewtonProblem, NewtonState
from .newton import NewtonRunner

__all__ = ["marginal_precision", "missing_information_blocks", "store_marginal_covariance"]

logger = logging.getLogger(__name__)

#: Entries of the stars' outer products formed at a time (float64): bounds the memory to ~128 MB.
CHUNK_ENTRIES = 16_000_000


def missing_information_blocks(likelihood: StarLikelihood, node_extinction: torch.Tensor) -> torch.Tensor:
    """``Σ_i Var[score_i]`` per sightline column in ``u = ρ ℓ``, mag⁻², shape ``(n_columns, n_d, n_d)``.

    Parameters
    ----------
    likelihood : StarLikelihood
        At its latent posteriors of the last :meth:`~dustgp.likelihood.StarLikelihood.update`.
    node_extinction : torch.Tensor, shape (n_nodes,)
        ``E[A_mod]`` at each node, mag, at the q of that update.
    """
    grid = likelihood.nodes.sightlines.grid
    n_d, n_columns = grid.n_d, grid.n_columns
    star, r = likelihood.star, likelihood.responsibility
    weight = likelihood.weight  # E[λ]: 1 unless Student-t
    if likelihood.noise == "student-t":
        shape = 0.5 * (likelihood.nu + 1.0)
        rate = shape / weight
        second = shape * (shape + 1.0) / rate**2  # E[λ²] of Gamma(shape, rate)
    else:
        second = weight * weight
    score = (likelihood.a - node_extinction) / likelihood.node_sigma2  # (A - a) / s², mag⁻¹
    first = GaussianStatistics.from_node_weights(
        grid,
        likelihood.grid_cell,
        likelihood.fraction,
        torch.zeros_like(score),
        second[star] * r * score * score,
        constant=0.0,
        n_stars=likelihood.n_stars,
    ).column_blocks()[0]
    return first - _mean_score_blocks(likelihood, r * score * weight[star], n_d, n_columns)


def _mean_score_blocks(likelihood: StarLikelihood, value: torch.Tensor, n_d: int, n_columns: int) -> torch.Tensor:
    """``Σ_i h̄_i h̄_iᵀ`` per column, with ``h̄_i = Σ_k value_ik e_ik`` (the nodes of a star share its column)."""
    star, cell, fraction, column = likelihood.star, likelihood.cell, likelihood.fraction, likelihood.column
    out = torch.zeros(n_columns, n_d, n_d, dtype=value.dtype, device=value.device)
    if star.numel() == 0:
        return out
    n_stars = likelihood.n_stars
    step = max(1, CHUNK_ENTRIES // (n_d * n_d))
    for first in range(0, n_stars, step):
        lo, hi = torch.searchsorted(star, torch.tensor([first, first + step], device=star.device)).tolist()
        if lo == hi:
            continue
        local = star[lo:hi] - first
        rows = int(local.max()) + 1
        at = torch.zeros(rows, n_d, dtype=value.dtype, device=value.device)
        at.index_put_((local, cell[lo:hi]), value[lo:hi], accumulate=True)
        partial = torch.zeros_like(at)
        partial.index_put_((local, cell[lo:hi]), value[lo:hi] * fraction[lo:hi], accumulate=True)
        # cells in front of a node's cell get its full value: the sum over the nodes beyond each cell
        behind = torch.flip(torch.cumsum(torch.flip(at, [1]), 1), [1]) - at
        mean = behind + partial  # (stars in the chunk, n_d)
        star_column = torch.zeros(rows, dtype=column.dtype, device=column.device)
        star_column[local] = column[lo:hi]
        out.index_add_(0, star_column, mean[:, :, None] * mean[:, None, :])
    return out


def marginal_precision(problem: NewtonProblem, state: NewtonState, missing_u: torch.Tensor) -> torch.Tensor:
    """The whitened precision of q(v) with ``missing_u`` (per column, in u) taken off, floored at the prior's.

    ``missing_u`` is taken to phi by ``diag(ln 10 E[u])`` on both sides, using the state's log-normal mean of u.
    """
    geo = state.geometry
    n, m_size = geo.k.shape
    lengths = problem.stats.path_lengths.to(DTYPE)
    mean_u = torch.exp(LN10 * state.mean + 0.5 * LN10**2 * state.variance) * lengths  # (n_columns, n_d)
    scale = LN10 * mean_u
    missing_phi = scale[:, :, None] * missing_u.to(DTYPE) * scale[:, None, :]
    k_col = geo.k.view(problem.n_columns, problem.n_d, m_size)
    projected = geo.k.T @ torch.bmm(missing_phi, k_col).view(n, m_size)  # Kᵀ C K
    half = torch.linalg.solve_triangular(geo.l_zz, projected, upper=False)
    whitened = torch.linalg.solve_triangular(geo.l_zz, half.T, upper=False)  # L_zz⁻¹ Kᵀ C K L_zz⁻ᵀ
    corrected = state.precision - 0.5 * (whitened + whitened.T)
    values, vectors = torch.linalg.eigh(corrected)
    # the prior's precision, or the fitted one's least where the fit's own curvature was already below it
    floor = min(1.0, float(torch.linalg.eigvalsh(state.precision)[0]))
    return (vectors * values.clamp(min=floor)) @ vectors.T


@torch.no_grad()
def store_marginal_covariance(runner: NewtonRunner) -> float:
    """Give the runner's model the covariance of q(v) from the marginal precision at its optimizer's state
    (:meth:`~dustgp.model.DustGP.set_marginal`: prediction draws with it, q itself is kept for a resume).

    Returns the share of the complete-data information (trace, whitened) that was missing; logged at INFO.
    """
    optimizer, likelihood = runner.optimizer, runner.likelihood
    state = optimizer.state
    node_extinction, _ = likelihood.node_moments(optimizer.cell_moments)  # the latents' last update was at state
    missing = missing_information_blocks(likelihood, node_extinction)
    precision = marginal_precision(runner.problem, state, missing)
    eye = torch.eye(precision.shape[0], dtype=precision.dtype, device=precision.device)
    complete = float(torch.trace(state.precision - eye))
    share = float(torch.trace(state.precision - precision)) / complete if complete > 0 else 0.0
    covariance = torch.cholesky_inverse(torch.linalg.cholesky(precision))
    runner.marginal = torch.linalg.cholesky(0.5 * (covariance + covariance.T))
    runner.gp.set_marginal(runner.marginal)
    logger.info("q(v) from the stars' marginal likelihood: %.1f%% of their information was the latents'", 100 * share)
    return share
