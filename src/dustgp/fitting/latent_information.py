"""The information the stars' latent variables do not carry, per sightline column (Louis 1982).

The second-order fit gives each star's distance node k, outlier flag and Student-t scale λ a mean-field posterior
of their own (EM and IRLS, :mod:`dustgp.likelihood`). Its curvature counts every node star with its responsibility,
as if its node were known: the *complete-data* information. A star whose node, flag and scale are summed over, as
its likelihood ``p(A_i | ρ)`` is, informs less, by the variance of its scores under their posterior (Louis 1982,
J. R. Stat. Soc. B 44, 226):

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
formed in chunks of stars. Both live within sightline columns; ``∂u/∂phi = ln 10 u`` takes them to phi
(:func:`missing_information_phi`).

The same matrix measures what the mean-field posteriors cost the ELBO. For each star the bound falls short of the
collapsed one, ``E_q[ln p(A_i | ρ)]``, by ``E_q[KL(q_i(k, λ, o) ‖ p(k, λ, o | ρ, A_i))]``; with the latents' posterior
taken at q's mean, that is ``½ tr(Σ C_i)`` to second order in q's spread, Σ q's covariance of phi within the column
and C_i the star's missing information in phi (the Fisher information of the latents' posterior in ρ). So

.. math::

    J = \\mathrm{ELBO} + \\tfrac12 \\sum_\\mathrm{columns} \\mathrm{tr}(\\Sigma_\\mathrm{col} C_\\mathrm{col}),

with C held where the last update of the latents left it (as their responsibilities are held), is the bound with the
latents summed over, to second order. In q its optimum is the corrected precision ``I + I_complete - C`` that
:mod:`dustgp.fitting.missing_information` forms once at the end; in the hyperparameters it no longer rewards a
smooth field for keeping the latents' posterior still (``missing_information="objective"``, docs: Design notes,
"The bound's scale length through distance errors"). A field varying fast along the sightline moves each star's
node responsibilities with ρ, and the mean-field bound pays for that coupling; the exact evidence does not.
"""

from __future__ import annotations

import torch

from ..likelihood import StarLikelihood
from ..sightlines import LN10, GaussianStatistics

__all__ = ["missing_information_blocks", "missing_information_phi", "to_phi"]

#: Entries of the stars' outer products formed at a time (float64): bounds the memory to ~128 MB.
CHUNK_ENTRIES = 16_000_000


def to_phi(missing_u: torch.Tensor, mean_u: torch.Tensor) -> torch.Tensor:
    """Blocks in ``u = ρ ℓ`` (mag⁻²) taken to phi = log10 ρ (dex⁻²) by ``∂u/∂phi = ln 10 E[u]`` on both sides.

    ``mean_u``: E[u] per cell, mag, shape ``(n_columns, n_d)``.
    """
    scale = LN10 * mean_u
    return scale[:, :, None] * missing_u.to(scale.dtype) * scale[:, None, :]


def missing_information_phi(likelihood: StarLikelihood, cell_moments: torch.Tensor) -> torch.Tensor:
    """``Σ_i Var[score_i]`` per sightline column in phi, dex⁻², shape ``(n_columns, n_d, n_d)``, at the latents'
    posteriors of the last update, made at the q whose :func:`~dustgp.sightlines.cell_extinction_moments` are
    ``cell_moments``."""
    node_extinction, _ = likelihood.node_moments(cell_moments)
    return to_phi(missing_information_blocks(likelihood, node_extinction), cell_moments[1])


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
