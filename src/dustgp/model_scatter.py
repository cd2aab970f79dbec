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
    *,
    iterations: int = 2,
    tol: float = 1e-4,
) -> tuple[float, float]:
    """``(τ, f)`` raising the expected complete-data log-likelihood of the module docstring (a generalised M step).

    Fisher scoring on ``(τ², f²)``: the expected Hessian of ``F = ½ Σ r [ln s² + R / s²]`` is
    ``½ Σ r g gᵀ / s⁴`` with ``g = (1, E[A_mod]²)``, positive definite where the Hessian itself need not be, and
    each step is projected onto ``0 ≤ τ ≤ 10 mag``, ``0 ≤ f ≤ 1`` and halved until F falls. Working on the squares
    rather than on their logarithms lets a scatter of 0 move (the gradient in ln τ² vanishes there). Each
    iteration is about fifteen passes over the nodes, so an update takes ``iterations`` of them (two by default:
    any increase keeps EM's guarantee) and the scatter converges over the fit's updates, warm-started.

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
    iterations, tol : int, float
        At most this many scoring steps; fewer once neither square changes by more than ``tol`` relative (or
        1e-12 mag² absolute).

    Returns
    -------
    tuple of float
        ``(τ, f)``; never worse than ``start``.
    """
    r = responsibility
    upper = np.square(SCATTER_MAX)

    def at(p: np.ndarray) -> tuple[float, torch.Tensor, torch.Tensor]:
        """F at p, with 1/s² and R/s² for the next step (five passes over the nodes)."""
        inverse = torch.add(base, square, alpha=float(p[1])).add_(float(p[0])).reciprocal_()
        ratio = residual2 * inverse
        return 0.5 * float(r @ torch.log(inverse).neg_().add_(ratio)), inverse, ratio

    p = np.minimum(np.square(start), upper)
    value, inverse, ratio = at(p)
    for _ in range(iterations):
        d = ratio.neg_().add_(1.0).mul_(inverse).mul_(r)  # 2 ∂F/∂s²
        h = inverse.mul_(inverse).mul_(r)  # 2 × the expected ∂²F/∂(s²)²
        gradient = 0.5 * np.array([float(d.sum()), float(d @ square)])
        hs = float(h @ square)
        fisher = 0.5 * np.array([[float(h.sum()), hs], [hs, float(h @ square.square())]])
        step = -np.linalg.solve(fisher, gradient)
        for _ in range(30):
            trial = np.clip(p + step, 0.0, upper)
            trial_value, inverse, ratio = at(trial)
            if trial_value <= value:
                break
            step = 0.5 * step
        else:
            break
        moved, p, value = np.abs(trial - p), trial, trial_value
        if np.all(moved <= tol * p + 1e-12):
            break
    return float(np.sqrt(p[0])), float(np.sqrt(p[1]))
