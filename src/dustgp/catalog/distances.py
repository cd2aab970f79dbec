"""Distance posteriors of catalogue stars as quadrature nodes: what a catalogue's distance columns say about d.

A catalogue gives a distance with a symmetric uncertainty, 16th/84th percentiles, or a parallax with its error.
:func:`lognormal_nodes` reads the first two as a log-normal posterior; a parallax is turned into a posterior under
an exponentially decreasing space density prior (Bailer-Jones 2015), never into 1/parallax:
:func:`parallax_distance_percentiles` gives its percentiles (the catalogue's distance is its median) and
:func:`parallax_nodes` its nodes, both from one table of the posterior. A distance that is a measurement rather
than a posterior (scattered log-normally about the true one) becomes one under a uniform space density of stars
with :func:`volume_prior_posterior`. The nodes are K equal-mass nodes per star,
which the likelihood averages over (:mod:`dustgp.likelihood`) and which posterior predictive checks of held-out stars
integrate over (:func:`dustgp.validation.holdout_report`).

numpy and scipy only: usable on a saved map without torch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import special

__all__ = [
    "DISTANCE_NODES",
    "PARALLAX_LENGTH_SCALE",
    "lognormal_nodes",
    "parallax_distance_percentiles",
    "parallax_nodes",
    "parallax_percentiles_and_nodes",
    "volume_prior_posterior",
]

#: Nodes per star of a fit's distance quadrature by default (``FitConfig.distance_nodes``): a catalogue read from
#: parallaxes tabulates these along with its distances (:func:`parallax_percentiles_and_nodes`), once.
DISTANCE_NODES = 8
#: L, the length scale of the exponentially decreasing space density prior, pc: the value Astraatmadja &
#: Bailer-Jones (2016) use for the whole sky.
PARALLAX_LENGTH_SCALE = 1350.0
# A posterior's table spans the ln d where its density per ln d is within e^-_DEPTH of its peak.
_DEPTH = 40.0


def volume_prior_posterior(distance: np.ndarray, distance_err: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r"""The distance posterior of a star whose catalogue distance is a log-normal *measurement*, under a uniform
    space density of stars.

    A measurement :math:`\ln d_\mathrm{obs} \sim \mathcal N(\ln d, s^2)`, ``s = asinh(σ_d / d_obs)`` (the width
    :func:`lognormal_nodes` reads), and the prior :math:`p(d) \propto d^2` (stars uniform in volume: as many per
    pc³ near as far) give in :math:`u = \ln d` the prior :math:`e^{3u}` and the posterior
    :math:`\mathcal N(\ln d_\mathrm{obs} + 3 s^2,\ s^2)`. Read as a posterior with no prior, the catalogue
    distance would put each star too near by a factor :math:`e^{-3s^2}` (12% at s = 0.2; Malmquist's bias),
    and a fit would put the dust too near with it (docs: Design notes, "Structures the grid resolves").

    Catalogues of posteriors (Bailer-Jones et al. 2021, StarHorse: Anders et al. 2022) already carry a prior and
    want none added; parallaxes get theirs in :func:`parallax_nodes`.

    Parameters
    ----------
    distance, distance_err : numpy.ndarray, shape (n,)
        Measured distance and its 1-sigma uncertainty, pc; ``distance_err`` ≥ 0.

    Returns
    -------
    median, half_width : numpy.ndarray, shape (n,)
        The posterior's median, :math:`d_\mathrm{obs} e^{3 s^2}`, and half its 16-84% width,
        ``median sinh(s)``, pc: read back by :func:`lognormal_nodes` as this log-normal posterior exactly.
    """
    distance = np.asarray(distance, float)
    s = np.arcsinh(np.asarray(distance_err, float) / distance)
    median = distance * np.exp(3.0 * s**2)
    return median, median * np.sinh(s)


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


def parallax_distance_percentiles(
    parallax: np.ndarray,
    parallax_err: np.ndarray,
    q: Sequence[float] = (16.0, 50.0, 84.0),
    *,
    length_scale: float = PARALLAX_LENGTH_SCALE,
    n_table: int = 512,
    chunk: int = 1024,
) -> np.ndarray:
    r"""Percentiles of the distance posterior of a parallax under the exponentially decreasing space density prior.

    .. math::

        p(d \mid \varpi) \propto d^2 e^{-d/L}\, \mathcal N(\varpi;\, 1000/d,\, \sigma_\varpi^2)

    (Bailer-Jones 2015, Eq. 18; L = 1.35 kpc by default, the value Astraatmadja & Bailer-Jones 2016 use for the
    whole sky), with d in pc and ϖ in mas. The posterior is proper for any parallax, zero and negative ones
    included; at high S/N its median tends to 1000/ϖ, off by :math:`\approx (4 - 1000/(L\varpi))
    (\sigma_\varpi/\varpi)^2` relative. It is tabulated on ``n_table`` points in ln d spanning wherever its density
    is within e⁻⁴⁰ of its peak (found from the stationary points, the roots of a cubic), and the percentiles are
    read off the table's cumulative sum. :func:`parallax_nodes` cuts the same table.

    Parameters
    ----------
    parallax, parallax_err : array_like, shape (n,)
        mas; finite, ``parallax_err`` > 0.
    q : sequence of float
        Percentiles, in (0, 100).
    length_scale : float
        L, pc.
    n_table : int
        Points of the table per star.
    chunk : int
        Stars tabulated at once (memory ~ ``chunk × n_table`` floats, a few times over).

    Returns
    -------
    numpy.ndarray, shape (n, len(q))
        pc.

    Raises
    ------
    ValueError
        Non-finite values, ``parallax_err`` <= 0, arrays of different shapes, q outside (0, 100), or a length
        scale that is not finite and > 0.
    """
    levels = np.asarray(q, float).ravel() / 100.0
    if not np.all((levels > 0) & (levels < 1)):
        raise ValueError(f"q: expected percentiles in (0, 100), got {list(np.asarray(q, float).ravel())}")
    return _quantiles(parallax, parallax_err, levels, length_scale, n_table, chunk)


def parallax_nodes(
    parallax: np.ndarray,
    parallax_err: np.ndarray,
    k: int,
    *,
    length_scale: float = PARALLAX_LENGTH_SCALE,
    n_table: int = 512,
    chunk: int = 1024,
) -> tuple[np.ndarray, np.ndarray]:
    """Nodes of the distance posterior from a parallax under the exponentially decreasing space density prior.

    ``p(d | ϖ) ∝ d² exp(-d / L) N(ϖ; 1000/d, σ_ϖ²)`` (Bailer-Jones 2015), tabulated as in
    :func:`parallax_distance_percentiles` and cut into ``k`` equal-mass pieces whose median distances are the
    nodes (equal weights): node j is the ``(j + ½) / k`` quantile. Works for any parallax S/N, negative included.

    Parameters
    ----------
    parallax, parallax_err : numpy.ndarray, shape (n,)
        mas; finite, ``parallax_err`` > 0.
    k : int
        Nodes per star.
    length_scale : float
        L, pc.
    n_table, chunk : int
        As in :func:`parallax_distance_percentiles`.

    Returns
    -------
    nodes : numpy.ndarray, shape (n, k)
        pc, ascending along each row.
    log_weights : numpy.ndarray, shape (n, k)
        ``ln(1/k)``.
    """
    nodes = _quantiles(parallax, parallax_err, (np.arange(k) + 0.5) / k, length_scale, n_table, chunk)
    return nodes, np.full_like(nodes, -math.log(k))


def parallax_percentiles_and_nodes(
    parallax: np.ndarray,
    parallax_err: np.ndarray,
    q: Sequence[float],
    k: int,
    *,
    length_scale: float = PARALLAX_LENGTH_SCALE,
    n_table: int = 512,
    chunk: int = 1024,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`parallax_distance_percentiles` and the nodes of :func:`parallax_nodes` from one table per star.

    Each quantile is read off the table on its own, so both equal what the two functions give apart, to the bit;
    the posterior, the costly part, is tabulated once instead of twice.

    Parameters
    ----------
    parallax, parallax_err : numpy.ndarray, shape (n,)
        mas; finite, ``parallax_err`` > 0.
    q : sequence of float
        Percentiles, in (0, 100).
    k : int
        Nodes per star, >= 1.
    length_scale : float
        L, pc.
    n_table, chunk : int
        As in :func:`parallax_distance_percentiles`.

    Returns
    -------
    percentiles : numpy.ndarray, shape (n, len(q))
        pc.
    nodes : numpy.ndarray, shape (n, k)
        pc, ascending along each row (their log weights are all ``ln(1/k)``).

    Raises
    ------
    ValueError
        As :func:`parallax_distance_percentiles`, or k < 1.
    """
    levels = np.asarray(q, float).ravel() / 100.0
    if not np.all((levels > 0) & (levels < 1)):
        raise ValueError(f"q: expected percentiles in (0, 100), got {list(np.asarray(q, float).ravel())}")
    if int(k) != k or k < 1:
        raise ValueError(f"k: expected an integer >= 1, got {k!r}")
    both = _quantiles(
        parallax, parallax_err, np.concatenate([levels, (np.arange(k) + 0.5) / k]), length_scale, n_table, chunk
    )
    return both[:, : levels.size], both[:, levels.size :]


def _quantiles(
    parallax: np.ndarray, parallax_err: np.ndarray, levels: np.ndarray, length_scale: float, n_table: int, chunk: int
) -> np.ndarray:
    """Quantiles ``levels`` (in (0, 1), ascending or not) of each star's parallax posterior, pc, shape (n, levels)."""
    plx, err = np.asarray(parallax, float), np.asarray(parallax_err, float)
    if plx.shape != err.shape or plx.ndim != 1:
        raise ValueError(f"parallax, parallax_err: expected 1-D arrays of one shape, got {plx.shape}, {err.shape}")
    if not (np.all(np.isfinite(plx)) and np.all(np.isfinite(err)) and np.all(err > 0)):
        raise ValueError("parallax, parallax_err: expected finite values and parallax_err > 0 mas")
    if not (math.isfinite(length_scale) and length_scale > 0):
        raise ValueError(f"length_scale: expected a finite value > 0 pc, got {length_scale!r}")
    out = np.empty((plx.size, levels.size))
    steps = np.linspace(0.0, 1.0, n_table)
    for start in range(0, plx.size, chunk):
        p, e = plx[start : start + chunk], err[start : start + chunk]
        lo, hi, peak = _table_range(p, e, length_scale)
        u = lo[:, None] + (hi - lo)[:, None] * steps  # ln d, equal steps: the trapezoid weights cancel
        density = np.exp(_log_density(u, p[:, None], e[:, None], length_scale) - peak[:, None])
        cdf = np.concatenate([np.zeros((p.size, 1)), np.cumsum(density[:, 1:] + density[:, :-1], axis=1)], axis=1)
        cdf /= cdf[:, -1:]
        out[start : start + chunk] = np.exp(_inverse(cdf, u, levels))
    return out


def _inverse(cdf: np.ndarray, u: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Per row, the u where the piecewise-linear ``cdf`` (ascending, 0 to 1) reaches each level: (rows, levels)."""
    rows, n_table = cdf.shape
    offset = 2.0 * np.arange(rows)[:, None]  # rows laid end to end, apart: one searchsorted for all of them
    where = np.searchsorted((cdf + offset).ravel(), (levels[None, :] + offset).ravel()).reshape(rows, levels.size)
    right = np.clip(where - np.arange(rows)[:, None] * n_table, 1, n_table - 1)
    c0, c1 = np.take_along_axis(cdf, right - 1, axis=1), np.take_along_axis(cdf, right, axis=1)
    u0, u1 = np.take_along_axis(u, right - 1, axis=1), np.take_along_axis(u, right, axis=1)
    t = np.clip((levels[None, :] - c0) / np.where(c1 > c0, c1 - c0, 1.0), 0.0, 1.0)
    return u0 + t * (u1 - u0)


def _log_density(u: np.ndarray, plx: np.ndarray, err: np.ndarray, length_scale: float) -> np.ndarray:
    """ln of the parallax posterior per unit ln d at ``u = ln d`` (d in pc), up to a constant:
    ``ln[d³ exp(-d/L) N(ϖ; 1000/d, σ²)]`` (d² of the prior, one more d from the ln-d step)."""
    with np.errstate(over="ignore"):
        return 3.0 * u - np.exp(u) / length_scale - 0.5 * ((plx - 1000.0 * np.exp(-u)) / err) ** 2


def _table_range(plx: np.ndarray, err: np.ndarray, length_scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per star: the ln d (pc) where its table starts and ends, and the peak of :func:`_log_density`.

    The density's stationary points in ln d are the positive real roots x = 1000/d (mas) of
    ``x³ - ϖx² + 3σ²x - (1000/L)σ²`` (one at least: the cubic is negative at 0). The largest density among them
    is the peak; beyond the outermost ones the density falls monotonically, so each end is found by doubling a
    step out of them, then bisecting, to where the density is e^-_DEPTH of the peak. This holds at any S/N: a
    narrow peak at 1000/ϖ, a broad one set by the prior, two at once, or one far out for a very negative parallax.
    """
    companion = np.zeros((plx.size, 3, 3))
    companion[:, 0, 0] = plx
    companion[:, 0, 1] = -3.0 * err**2
    companion[:, 0, 2] = 1000.0 / length_scale * err**2
    companion[:, 1, 0] = companion[:, 2, 1] = 1.0
    roots = np.linalg.eigvals(companion)
    real = (roots.real > 0) & (np.abs(roots.imag) <= 1e-6 * np.abs(roots))
    real |= ~real.any(axis=1, keepdims=True) & (roots.real == roots.real.max(axis=1, keepdims=True))
    u_root = np.log(1000.0 / np.where(real, roots.real, 1.0))
    peak = np.where(real, _log_density(u_root, plx[:, None], err[:, None], length_scale), -np.inf).max(axis=1)
    near, far = np.where(real, u_root, np.inf).min(axis=1), np.where(real, u_root, -np.inf).max(axis=1)
    ends = []
    for outermost, direction in ((near, -1.0), (far, 1.0)):
        # the first step out: the width of the peak there (when it is one), at most 1 in ln d
        d, x = np.exp(outermost), 1000.0 * np.exp(-outermost)
        step = 1.0 / np.sqrt(np.clip(d / length_scale - x * (plx - 2.0 * x) / err**2, 1.0, 1e18))
        inside = outside = outermost
        for _ in range(64):
            outside = outermost + direction * step
            beyond = _log_density(outside, plx, err, length_scale) < peak - _DEPTH
            if beyond.all():
                break
            inside = np.where(beyond, inside, outside)
            step = np.where(beyond, step, 2.0 * step)
        for _ in range(30):
            middle = 0.5 * (inside + outside)
            beyond = _log_density(middle, plx, err, length_scale) < peak - _DEPTH
            inside, outside = np.where(beyond, inside, middle), np.where(beyond, middle, outside)
        ends.append(outside)
    return ends[0], ends[1], peak
