"""Distance posteriors of catalogue stars as quadrature nodes: what a catalogue's distance columns say about d.

A catalogue gives a distance with a symmetric uncertainty, 16th/84th percentiles, or a parallax with its error.
:func:`lognormal_nodes` reads the first two as a log-normal posterior; :func:`parallax_nodes` turns a parallax into
a posterior under an exponentially decreasing space density prior (Bailer-Jones 2015), never as 1/parallax. Both
return K equal-mass nodes per star, which the likelihood averages over (:mod:`dustgp.likelihood`) and which
posterior predictive checks of held-out stars integrate over (:func:`dustgp.validation.holdout_report`).

numpy and scipy only: usable on a saved map without torch.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import special

__all__ = ["lognormal_nodes", "parallax_nodes"]


def lognormal_nodes(distance: np.ndarray, distance_err: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Equal-mass nodes of a log-normal distance posterior, median ``distance``, 16-84% width ``2 distance_err``.

    Node j sits at the median of the j-th of k equal-probability slices, ``d exp(s Φ⁻¹((j + ½) / k))`` with
    ``s = asinh(σ_d / d)``. Equal slices (rather than Gauss-Hermite nodes, which leave the tails to a few far
    nodes of tiny weight) let each node carry the spread of the model extinction across its slice
    (:meth:`StarLikelihood._node_variance`), which keeps the quadrature right where a cloud lies inside the
    distance posterior.

    Parameters
    ----------
    distance, distance_err : numpy.ndarray, shape (n,)
        pc; ``distance_err`` ≥ 0.
    k : int
        Nodes per star.

    Returns
    -------
    nodes : numpy.ndarray, shape (n, k)
        pc, ascending along each row.
    log_weights : numpy.ndarray, shape (n, k)
        ``ln(1/k)``.
    """
    levels = special.ndtri((np.arange(k) + 0.5) / k)
    s = np.arcsinh(np.asarray(distance_err, float) / np.asarray(distance, float))
    nodes = np.asarray(distance, float)[:, None] * np.exp(s[:, None] * levels[None, :])
    return nodes, np.full(nodes.shape, -math.log(k))


def parallax_nodes(
    parallax: np.ndarray,
    parallax_err: np.ndarray,
    k: int,
    *,
    length_scale: float = 1350.0,
    n_table: int = 512,
    chunk: int = 16384,
) -> tuple[np.ndarray, np.ndarray]:
    """Nodes of the distance posterior from a parallax under the exponentially decreasing space density prior.

    ``p(d | ϖ) ∝ d² exp(-d / L) N(ϖ; 1000/d, σ_ϖ²)`` (Bailer-Jones 2015; L = 1.35 kpc, the value Astraatmadja &
    Bailer-Jones 2016 use for the whole sky), tabulated on ``n_table`` points in ln d and cut into ``k`` equal-mass
    pieces whose median distances are the nodes (equal weights). Works for any parallax S/N, negative included.

    Parameters
    ----------
    parallax, parallax_err : numpy.ndarray, shape (n,)
        mas; ``parallax_err`` > 0.
    k : int
    length_scale : float
        L, pc.

    Returns
    -------
    nodes : numpy.ndarray, shape (n, k)
        pc.
    log_weights : numpy.ndarray, shape (n, k)
        ``ln(1/k)``.
    """
    plx = np.asarray(parallax, float)
    err = np.asarray(parallax_err, float)
    nodes = np.empty((plx.size, k))
    levels = (np.arange(k) + 0.5) / k
    for start in range(0, plx.size, chunk):
        p, e = plx[start : start + chunk, None], err[start : start + chunk, None]
        near = 1000.0 / np.maximum(p + 8.0 * e, 1e-3)
        far = np.minimum(1000.0 / np.clip(p - 8.0 * e, 1e-6, None), 20.0 * length_scale)
        far = np.maximum(far, 2.0 * near)
        grid = near * (far / near) ** np.linspace(0.0, 1.0, n_table)[None, :]
        log_post = 3.0 * np.log(grid) - grid / length_scale - 0.5 * ((p - 1000.0 / grid) / e) ** 2  # d³: the ln-d step
        post = np.exp(log_post - log_post.max(axis=1, keepdims=True))
        cdf = np.cumsum(0.5 * (post[:, 1:] + post[:, :-1]), axis=1)
        cdf = np.concatenate([np.zeros((cdf.shape[0], 1)), cdf], axis=1)
        cdf /= cdf[:, -1:]
        log_grid = np.log(grid)
        for row in range(cdf.shape[0]):
            nodes[start + row] = np.exp(np.interp(levels, cdf[row], log_grid[row]))
    return nodes, np.full_like(nodes, -math.log(k))
