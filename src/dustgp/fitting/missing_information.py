"""q's covariance from the stars' marginal likelihood: the information their latent variables do not carry.

The second-order fit gives each star's distance node k, outlier flag and Student-t scale λ a mean-field posterior
of their own (EM and IRLS, :mod:`dustgp.likelihood`). At its optimum, q(v)'s precision is the prior's plus the
*complete-data* information; the stars' marginal likelihood informs less, by the variance of their scores under
the latents' posterior (Louis 1982; :mod:`dustgp.fitting.latent_information` computes it per sightline column).
``∂u/∂phi = ln 10 u`` takes it to phi, and ``L_zz⁻¹ Kᵀ (·) K L_zz⁻ᵀ`` to the whitened inducing values, as the fit's
curvature is. The corrected precision has its eigenvalues floored at 1, the prior's (or at the fitted precision's
least, where that is lower): where a star's likelihood is not log-concave (a t star beyond ``√ν σ``, a star between
two clouds) its curvature may be negative, but no direction is let know less than the prior. Computed once, when a
newton fit ends (``FitConfig.missing_information``), and kept beside q (:meth:`dustgp.model.DustGP.set_marginal`,
in the model's state and so in checkpoints): maps are drawn with it, while a resumed fit continues from the
mean-field q it left. With ``missing_information="objective"`` the fit counts the same information in its objective
at every step instead, and q ends corrected (:mod:`dustgp.fitting.latent_information`). SVI needs neither: its ELBO
takes the marginal per draw.
"""

from __future__ import annotations

import logging

import torch

from ..sightlines import LN10
from .exact_elbo import DTYPE, NewtonProblem, NewtonState
from .latent_information import missing_information_blocks, to_phi
from .newton import NewtonRunner

__all__ = ["marginal_precision", "missing_information_blocks", "store_marginal_covariance"]

logger = logging.getLogger(__name__)


def marginal_precision(problem: NewtonProblem, state: NewtonState, missing_u: torch.Tensor) -> torch.Tensor:
    """The whitened precision of q(v) with ``missing_u`` (per column, in u) taken off, floored at the prior's.

    ``missing_u`` is taken to phi by ``diag(ln 10 E[u])`` on both sides, using the state's log-normal mean of u.
    """
    geo = state.geometry
    n, m_size = geo.k.shape
    lengths = problem.stats.path_lengths.to(DTYPE)
    mean_u = torch.exp(LN10 * state.mean + 0.5 * LN10**2 * state.variance) * lengths  # (n_columns, n_d)
    missing_phi = to_phi(missing_u, mean_u)
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
