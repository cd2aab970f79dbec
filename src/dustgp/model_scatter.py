"""Model scatter: the variance a smooth map leaves between its extinction and the stars', learned by EM.

A map whose scale lengths exceed the size of the clouds cannot reproduce every star's extinction, however precise
its quoted uncertainty: structure it does not resolve scatters the stars about it. In a clumpy medium that scatter
grows with the column, so each star's likelihood (:mod:`dustgp.likelihood`) may add

.. math::

    s^2 = \\tau^2 + f^2 A_\\mathrm{mod}^2

to its variance, τ in mag and f a fraction. The two are learned by the M step of EM: at the current latent
posteriors (node and inlier responsibilities r, t scales E[λ]) and moments of the model extinction, maximise

.. math::

    -\\tfrac12 \\sum_{ik} r_{ik} \\Big[\\ln s_{ik}^2 + E[\\lambda_i]\\, E[(A_i - A_{\\mathrm{mod},ik})^2] / s_{ik}^2
    \\Big],
    \\qquad s_{ik}^2 = v_{ik} + \\tau^2 + f^2 E[A_{\\mathrm{mod},ik}]^2,

over ``(τ², f²)`` (v: the quoted variance and the node's span). The model extinction in the scatter is held at its
current mean (as IRLS holds its weights), so the newton fit's objective moves a little with it at each update.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import optimize

__all__ = ["SCATTER_MAX", "scatter_m_step"]

#: Largest τ (mag) and f the scatter is learned up to: beyond 10 mag or 100% of the extinction it would say that
#: the map explains nothing.
SCATTER_MAX = (10.0, 1.0)


def scatter_m_step(
    base: torch.Tensor,
    residual2: torch.Tensor,
    responsibility: torch.Tensor,
    square: torch.Tensor,
    start: tuple[float, float],
) -> tuple[float, float]:
    """The ``(τ, f)`` that maximise the expected complete-data log-likelihood (module docstring).

    Parameters
    ----------
    base : torch.Tensor, shape (n_nodes,)
        v_ik: each node's variance without the scatter, mag².
    residual2 : torch.Tensor, shape (n_nodes,)
        ``E[λ_i] E[(A_i - A_mod,ik)²]``, mag².
    responsibility : torch.Tensor, shape (n_nodes,)
        r_ik: the node's (inlier) responsibility.
    square : torch.Tensor, shape (n_nodes,)
        ``E[A_mod,ik]²``, mag².
    start : tuple of float
        The current ``(τ, f)``.

    Returns
    -------
    tuple of float
        ``(τ, f)``; never worse than ``start``. L-BFGS-B works on ``(τ², f²)`` bounded below by 0, not on their
        logarithms, where the gradient vanishes as the scatter does and a start at 0 could never move.
    """
    r = responsibility

    def negative(params: np.ndarray) -> tuple[float, np.ndarray]:
        s2 = base + params[0] + params[1] * square
        ratio = residual2 / s2
        d_s2 = 0.5 * r * (1.0 - ratio) / s2  # ∂/∂s²
        return 0.5 * float(r @ (torch.log(s2) + ratio)), np.array([float(d_s2.sum()), float(d_s2 @ square)])

    bounds = [(0.0, hi * hi) for hi in SCATTER_MAX]
    first = np.minimum(np.square(start), [hi for _, hi in bounds])
    found = optimize.minimize(negative, first, jac=True, method="L-BFGS-B", bounds=bounds, options={"maxiter": 30})
    best = found.x if found.fun <= negative(first)[0] else first
    return float(np.sqrt(best[0])), float(np.sqrt(best[1]))
