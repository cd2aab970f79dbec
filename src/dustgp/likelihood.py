"""Star likelihoods: distance uncertainty marginalised along the sightline, robust noise, error floors.

Each star i has a distance posterior ``p(d | data_i)``, represented by K quadrature nodes ``d_ik`` with weights
``π_ik`` along its own sightline column, and an observed extinction ``A_i`` with uncertainty ``σ_i`` (mag). Its
likelihood given the density field ρ is the average over its distance (Bayestar's approach, Green et al. 2014):

.. math::

    p(A_i \\mid \\rho) = \\sum_k \\pi_{ik}\\, L\\big(A_i - A_\\mathrm{mod}(d_{ik}; \\rho);\\ \\sigma_i\\big),

with the noise model L one of

* ``"gaussian"``: :math:`N(0, \\sigma_i^2)`, the paper's;
* ``"student-t"``: a Student-t of ``nu`` degrees of freedom and scale σ_i (Edenhofer et al. 2024), a Gaussian
  whose precision is scaled by :math:`\\lambda_i \\sim \\mathrm{Gamma}(\\nu/2, \\nu/2)`;
* ``"mixture"``: :math:`(1-\\varepsilon)\\, N(0, \\sigma_i^2) + \\varepsilon\\, U`, a Gaussian plus an outlier
  population of fraction ε whose extinctions carry no information on ρ (U flat over the catalogue's extinction
  range); ε is learned (Hogg, Bovy & Lang 2010).

Each node's variance is σ_i² plus, optionally, a *model scatter* ``τ² + f² A_mod²`` for extinction the map cannot
resolve (:mod:`dustgp.model_scatter`), learned with the fit (``learn_scatter``); it enters the posterior predictive
of every star, held-out ones included.

Variational treatment
---------------------
The node index, the outlier flag and the t scale λ_i are latent variables with a mean-field posterior
``q(k_i, o_i, λ_i)``. Given q(ρ) the optimal latent posteriors are closed-form (:meth:`StarLikelihood.update`),
and given them the ELBO's data term is the Gaussian likelihood of *node stars*, one per (star, node), with
precision weights

.. math::

    w_{ik} = q_i(k, \\mathrm{inlier})\\, E[\\lambda_i] / \\sigma_i^2 ,

which :class:`~dustgp.sightlines.GaussianStatistics` turns into per-cell sufficient statistics; its expectation
under the log-normal ρ stays exact. Alternating the two updates raises the ELBO at each half-step (coordinate
ascent; the weights are IRLS weights for the t and the responsibilities of EM for the mixture and the nodes), so
the second-order fit keeps its guarantee. Its cost per outer step is linear in stars × nodes and vectorised.
``method="svi"`` uses :meth:`StarLikelihood.log_likelihood`, the exact marginal per Monte Carlo draw of ρ.

Distance posteriors
-------------------
From a distance and a symmetric uncertainty (or 16th/84th percentiles, whose half-width the catalogue keeps), the
posterior is log-normal with median d and log-width ``s = asinh(σ_d / d)``, which puts the 16th and 84th
percentiles exactly ``2 σ_d`` apart; the nodes cut it into equal-probability slices (:func:`lognormal_nodes`), and
each node's variance adds the spread of the model extinction across its slice, so that a cloud steeper than
``σ_i / σ_d`` is not missed between nodes. From a parallax, the posterior under an exponentially decreasing space
density prior ``p(d) ∝ d² exp(-d/L)`` (Bailer-Jones 2015) is tabulated and cut at its quantiles
(:func:`parallax_nodes`). The cheaper ``"moment"`` treatment keeps one node
at the catalogue distance and adds the model's own slope to the variance, ``σ² + (ρ(d_i) σ_d)²`` (a first-order
moment match, updated with the fit), where the older ``"inflate"`` takes the slope from neighbouring stars before
the fit (:meth:`dustgp.catalog.Catalog.inflate_for_distance`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy import special, stats
from torch.nn import functional

from .catalog import lognormal_nodes, parallax_nodes
from .grid import Grid
from .model_scatter import scatter_m_step
from .sightlines import GaussianStatistics, Sightlines

__all__ = [
    "DISTANCE_TREATMENTS",
    "NOISE_MODELS",
    "StarLikelihood",
    "StarNodes",
    "lognormal_nodes",
    "parallax_nodes",
]

NOISE_MODELS = ("gaussian", "student-t", "mixture")
DISTANCE_TREATMENTS = ("auto", "quadrature", "moment", "inflate", "none")
#: Outlier fractions are kept inside this range when learned: at 0 an outlier could never be recognised again.
OUTLIER_FRACTION_RANGE = (1e-4, 0.5)
#: Stars with outlier probability above this are flagged.
OUTLIER_THRESHOLD = 0.5
#: |normalised residual| above which a star is flagged when the noise model has no outlier class (p ≈ 0.0027).
RESIDUAL_THRESHOLD = 3.0


@dataclass(frozen=True)
class StarNodes:
    """The (star, node) pairs on a grid: where each node's sightline ends, and its weight in the star's average.

    Nodes off the grid or in the ghost cells are dropped and each star's remaining weights renormalised; a star
    with no node on the grid drops out.

    Attributes
    ----------
    sightlines : Sightlines
        One row per kept node.
    star : numpy.ndarray of int, shape (n_nodes,)
        Index of the node's star in the arrays given to :meth:`build` (ascending).
    log_prior : numpy.ndarray, shape (n_nodes,)
        ln π_ik, renormalised over the kept nodes of each star.
    n_stars : int
        Stars given (with or without kept nodes).
    """

    sightlines: Sightlines
    star: np.ndarray
    log_prior: np.ndarray
    n_stars: int

    @classmethod
    def build(cls, grid: Grid, l: np.ndarray, b: np.ndarray, nodes: np.ndarray, log_weights: np.ndarray) -> StarNodes:
        """From per-star nodes ``(n, k)`` (pc) and their log weights at positions ``l, b`` (deg)."""
        n, k = nodes.shape
        lines = Sightlines.from_positions(grid, np.repeat(l, k), np.repeat(b, k), nodes.reshape(-1))
        star = lines.star_index // k
        log_prior = log_weights.reshape(-1)[lines.star_index]
        norm = _segment_logsumexp(torch.as_tensor(log_prior), torch.as_tensor(star), n).numpy()
        return cls(sightlines=lines, star=star, log_prior=log_prior - norm[star], n_stars=n)

    def __len__(self) -> int:
        return self.star.size


def _segment_logsumexp(values: torch.Tensor, segment: torch.Tensor, n: int) -> torch.Tensor:
    """``logsumexp`` of ``values[..., j]`` over the j with ``segment[j] = s``, for s < n; -inf where empty."""
    shape = (*values.shape[:-1], n)
    index = segment.expand_as(values)
    peak = torch.full(shape, -math.inf, dtype=values.dtype, device=values.device)
    peak = peak.scatter_reduce(-1, index, values, reduce="amax", include_self=True)
    safe = torch.where(torch.isfinite(peak), peak, torch.zeros((), dtype=values.dtype, device=values.device))
    total = torch.zeros(shape, dtype=values.dtype, device=values.device)
    total = total.scatter_add(-1, index, torch.exp(values - safe.gather(-1, index)))
    return safe + torch.log(total)


class StarLikelihood:
    """The likelihood of a catalogue on a grid, with its latent-variable posteriors (see the module docstring).

    Parameters
    ----------
    nodes : StarNodes
        Distance nodes of the stars (one node per star at its catalogue distance when distances are taken as
        exact).
    extinction, extinction_err : numpy.ndarray, shape (n_stars,)
        A_i and σ_i, mag (σ already including any floor).
    noise : {"gaussian", "student-t", "mixture"}
    nu : float
        Degrees of freedom of the Student-t (> 0).
    outlier_fraction : float
        ε of the mixture (its starting value when ``learn_outlier_fraction``).
    learn_outlier_fraction : bool
    moment_distance_err : numpy.ndarray, optional
        σ_d per star, pc: the ``"moment"`` treatment (one node per star, its variance widened by the model slope).
    scatter, learn_scatter : tuple of float, bool
        ``(τ, f)`` (mag, fraction) of the model scatter ``τ² + f² A_mod²`` added to each node's variance, and
        whether to learn them at every :meth:`update` from there (:mod:`dustgp.model_scatter`).
    """

    def __init__(
        self,
        nodes: StarNodes,
        extinction: np.ndarray,
        extinction_err: np.ndarray,
        *,
        noise: str = "gaussian",
        nu: float = 4.0,
        outlier_fraction: float = 0.02,
        learn_outlier_fraction: bool = True,
        moment_distance_err: np.ndarray | None = None,
        scatter: tuple[float, float] = (0.0, 0.0),
        learn_scatter: bool = False,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str = "cpu",
    ) -> None:
        if noise not in NOISE_MODELS:
            raise ValueError(f"likelihood: expected one of {NOISE_MODELS}, got {noise!r}")
        if not nu > 0:
            raise ValueError(f"nu: expected a positive number of degrees of freedom, got {nu!r}")
        lo, hi = OUTLIER_FRACTION_RANGE
        if not lo <= outlier_fraction <= hi:
            raise ValueError(f"outlier_fraction: expected a value in [{lo}, {hi}], got {outlier_fraction!r}")
        if len(scatter) != 2 or not all(math.isfinite(v) and v >= 0 for v in scatter):
            raise ValueError(f"scatter: expected (floor in mag, fraction), both >= 0, got {scatter!r}")
        self.nodes, self.noise, self.nu = nodes, noise, float(nu)
        self.scatter, self.learn_scatter = (float(scatter[0]), float(scatter[1])), learn_scatter
        self.outlier_fraction, self.learn_outlier_fraction = float(outlier_fraction), learn_outlier_fraction
        self.update_start = (self.outlier_fraction, self.scatter)  # see update_nodes
        as_t = {"dtype": dtype, "device": device}
        self.dtype, self.device = dtype, torch.device(device)
        self.a_star = torch.as_tensor(np.array(extinction, dtype=float), **as_t)
        self.sigma2_obs = torch.as_tensor(np.asarray(extinction_err, float) ** 2, **as_t)
        self.sigma2 = self.sigma2_obs.clone()  # per star, widened by the "moment" treatment
        self.moment_err = (
            None if moment_distance_err is None else torch.as_tensor(np.array(moment_distance_err, dtype=float), **as_t)
        )
        lines = nodes.sightlines
        self.star = torch.as_tensor(nodes.star, device=device)
        self.column = torch.as_tensor(lines.column, device=device)
        self.cell = torch.as_tensor(lines.cell, device=device)
        self.fraction = torch.as_tensor(np.array(lines.fraction, dtype=float), **as_t)
        self.log_prior = torch.as_tensor(np.array(nodes.log_prior, dtype=float), **as_t)
        self.a = self.a_star[self.star]
        self.a2 = self.a * self.a
        #: each node's cell in the flat (column, distance) order of the cell moments, and in the grid's order
        self.flat_cell = self.column * lines.grid.n_d + self.cell
        self.grid_cell = torch.as_tensor(lines.cell_index, device=device)
        margin = float(np.median(extinction_err)) if len(extinction) else 0.5
        low = float(np.min(extinction)) - margin if len(extinction) else 0.0
        span = max(float(np.ptp(extinction)) + 2.0 * margin if len(extinction) else 1.0, 1e-3)
        #: where the outlier population U is flat: the catalogue's extinction range widened by the median σ (mag)
        self.outlier_range = (low, low + span)
        #: ln U: the flat outlier density over that range (mag⁻¹)
        self.log_outlier_density = -math.log(span)
        n = nodes.n_stars
        #: stars with at least one node on the grid (the others carry no information on ρ)
        self.has_nodes = torch.zeros(n, dtype=torch.bool, device=device)
        self.has_nodes[self.star] = True
        self.weight = torch.ones(n, **as_t)  # E[λ_i]
        self.outlier_probability = torch.zeros(n, **as_t)
        self.responsibility = torch.exp(self.log_prior)  # q_i(k, inlier)
        self.star_sigma2 = self.sigma2[self.star]  # σ_i² at each node
        self.node_sigma2 = self.star_sigma2  # σ_i² widened by the node's span (set by each update)
        self._weights: torch.Tensor | None = None  # node_weights() at the last update
        self._data_term = float("nan")

    @property
    def n_stars(self) -> int:
        return self.nodes.n_stars

    # ----------------------------------------------------------------------------------------------------------
    # the latent posteriors given the moments of the model extinction at each node

    def node_moments(self, cell_moments: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``E[A_mod]`` and ``E[A_mod²]`` at every node from the cell moments (columns first).

        ``cell_moments``: :func:`~dustgp.sightlines.cell_extinction_moments`.
        """
        flat = cell_moments.reshape(5, -1)
        front, first, front_sq, front_u, second = (flat[i].index_select(0, self.flat_cell) for i in range(5))
        f = self.fraction
        # front + f first, and front_sq + 2 f front_u + f² second, in as few passes over the nodes as possible
        return front.addcmul_(f, first), front_sq.addcmul_(f, front_u.addcmul_(f, second, value=0.5), value=2.0)

    def update(self, cell_moments: torch.Tensor, rounds: int = 3) -> None:
        """The closed-form latent posteriors (and ε) at the current q(ρ), given its cell moments.

        Parameters
        ----------
        cell_moments : torch.Tensor, shape (5, n_columns, n_d)
            :func:`~dustgp.sightlines.cell_extinction_moments` of the current q(ρ) on the training grid.
        rounds : int
            Alternations of the node and t-scale (or ε) updates, each raising the ELBO.
        """
        mean_a, mean_a2 = self.node_moments(cell_moments)
        self.update_nodes(mean_a, mean_a2, cell_moments, rounds=rounds)

    @property
    def static(self) -> bool:
        """Whether the node weights never change (a Gaussian, one node per star, no moment widening)."""
        fixed = self.moment_err is None and self.scatter == (0.0, 0.0) and not self.learn_scatter
        return self.noise == "gaussian" and fixed and len(self.nodes) == int(self.has_nodes.sum())

    def update_nodes(
        self, mean_a: torch.Tensor, mean_a2: torch.Tensor, cell_moments: torch.Tensor | None = None, rounds: int = 3
    ) -> None:
        """:meth:`update` from ``E[A_mod]`` and ``E[A_mod²]`` at the nodes (mag, mag²), e.g. Monte Carlo ones.

        Its rounds move ε and the scatter, so ``update_start`` keeps the values they started from: checkpoints hold
        it, and a resumed newton fit repeats the last update from there at the same q (from the final values it
        would take one update more than the uninterrupted fit).
        """
        self.update_start = (self.outlier_fraction, self.scatter)
        if self.moment_err is not None and cell_moments is not None:  # the model's slope dA/dd at the star: ρ there
            lengths = torch.as_tensor(self.nodes.sightlines.grid.path_lengths, dtype=self.dtype, device=self.device)
            slope = cell_moments[1].reshape(-1).index_select(0, self.flat_cell) / lengths[self.cell]
            self.sigma2 = self.sigma2_obs.clone()
            self.sigma2[self.star] += (slope * self.moment_err[self.star]) ** 2
            self.star_sigma2 = self.sigma2[self.star]
        if self.learn_scatter:
            self.scatter = self._learn_scatter(mean_a, mean_a2)
        self.node_sigma2 = s2 = self._node_variance(mean_a)
        # E[(A - A_mod)²] / σ²
        e = torch.add(mean_a2, self.a2).addcmul_(self.a, mean_a, value=-2.0).div_(s2).clamp_(min=0.0)
        n, star, lp = self.n_stars, self.star, self.log_prior
        log_prior_norm = torch.log(s2 * (2.0 * math.pi)).mul_(-0.5).add_(lp)
        if self.noise == "mixture":
            # the inlier's node sum does not depend on ε: one log-sum-exp over the nodes, then the ε rounds per star
            log_joint = log_prior_norm.add_(e, alpha=-0.5)
            log_inlier = _segment_logsumexp(log_joint, star, n)
            for _ in range(max(rounds, 1)):
                used = self.outlier_fraction
                log_out = math.log(used) + self.log_outlier_density
                log_norm = torch.logaddexp(log_inlier + math.log1p(-used), torch.full_like(self.a_star, log_out))
                self.outlier_probability = torch.exp(log_out - log_norm)
                if self.learn_outlier_fraction:
                    lo, hi = OUTLIER_FRACTION_RANGE
                    self.outlier_fraction = float(self.outlier_probability.mean().clamp(lo, hi))
            self.responsibility = log_joint.add_((math.log1p(-used) - log_norm)[star]).exp_()
            data = log_norm.sum()
        else:
            for _ in range(rounds if self.noise == "student-t" else 1):
                log_joint = log_prior_norm - 0.5 * self.weight[star] * e  # E[λ] = 1 but for the Student-t
                log_norm = _segment_logsumexp(log_joint, star, n)
                self.responsibility = torch.exp(log_joint - log_norm[star])
                data = log_norm[self.has_nodes].sum()
                if self.noise == "student-t":
                    shape = 0.5 * (self.nu + 1.0)
                    expected = torch.zeros_like(self.a_star).index_add_(0, star, self.responsibility * e)
                    rate = 0.5 * self.nu + 0.5 * expected
                    self.weight = shape / rate
                    e_log_lambda = special.digamma(shape) - torch.log(rate)
                    # with q(λ) optimal, E_q[ln p(A, λ)] - E_q[ln q(λ)] adds ½ E[ln λ] - KL(q(λ) || p(λ))
                    # to the node sum, whose quadratic part is taken at E[λ]
                    log_joint = log_prior_norm - 0.5 * self.weight[star] * e
                    log_norm = _segment_logsumexp(log_joint, star, n)
                    self.responsibility = torch.exp(log_joint - log_norm[star])
                    data = log_norm + 0.5 * e_log_lambda - _gamma_kl(shape, rate, self.nu)
                    data = data[self.has_nodes].sum()
        self._data_term = float(data)
        self._weights = None
        # Σ w s² e = Σ q E[λ] e: the node weights times their variance
        quadratic = self.responsibility if self.noise != "student-t" else self.responsibility * self.weight[star]
        self._quadratic = float(-0.5 * (quadratic @ e))

    def _node_variance(self, node_extinction: torch.Tensor, *, scatter: bool = True) -> torch.Tensor:
        """σ_i² plus the spread of the model extinction over each node's share of the distance posterior, mag²,
        plus the model scatter ``τ² + f² A_mod²`` unless ``scatter`` is False.

        A node stands for an equal-mass slice of the star's distance posterior, across which the model extinction
        changes by about the difference to its neighbouring nodes; taken as uniform over that span, it adds
        ``span² / 12``. Without it a cloud steeper than ``σ_i / σ_d`` falls between nodes and the quadrature of
        ``∫ p(d) N(A; A_mod(d), σ²) dd`` misses it (tested against the integral in tests/test_likelihood.py).
        ``node_extinction`` has shape ``(..., n_nodes)``.
        """
        same, half = self._neighbours()
        # the difference to the previous node of the same star (0 for a star's first node), then to the next
        step = (node_extinction[..., 1:] - node_extinction[..., :-1]) * same
        # the mean of both differences where a node has a neighbour on each side, else the one
        span = (functional.pad(step, (1, 0)) + functional.pad(step, (0, 1))) * half
        variance = torch.addcmul(self.star_sigma2, span, span, value=1.0 / 12.0)
        floor, fraction = self.scatter if scatter else (0.0, 0.0)
        if fraction > 0.0:
            variance = variance.addcmul_(node_extinction, node_extinction, value=fraction * fraction)
        return variance.add_(floor * floor) if floor > 0.0 else variance

    def _learn_scatter(self, mean_a: torch.Tensor, mean_a2: torch.Tensor) -> tuple[float, float]:
        """:func:`~dustgp.model_scatter.scatter_m_step` at the latent posteriors of the last update."""
        residual2 = torch.add(mean_a2, self.a2).addcmul_(self.a, mean_a, value=-2.0).clamp_(min=0.0)
        if self.noise == "student-t":
            residual2 = residual2 * self.weight[self.star]
        base = self._node_variance(mean_a, scatter=False)
        return scatter_m_step(base, residual2, self.responsibility, mean_a * mean_a, self.scatter)

    def _neighbours(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Whether each node follows a node of the same star (as 1/0), and the factor ½ for nodes with a neighbour
        on both sides, 1 otherwise (fixed by the node layout, so found once)."""
        if getattr(self, "_neighbour_masks", None) is None:
            same = self.star[1:] == self.star[:-1]
            no = torch.tensor([False], device=same.device)
            both = torch.cat([no, same]) & torch.cat([same, no])
            half = torch.where(both, 0.5, 1.0).to(self.dtype)
            self._neighbour_masks = same.to(self.dtype), half
        return self._neighbour_masks

    def node_weights(self) -> torch.Tensor:
        """``w_ik = q_i(k, inlier) E[λ_i] / σ_i²`` per node, mag⁻² (kept until the next update)."""
        if self._weights is None:
            weights = self.responsibility / self.node_sigma2
            self._weights = weights.mul_(self.weight[self.star]) if self.noise == "student-t" else weights
        return self._weights

    def statistics(self) -> GaussianStatistics:
        """The node stars' Gaussian statistics at the current latent posteriors.

        Their constant is set so that ``expected_log_likelihood`` at the q(ρ) of the last :meth:`update` equals the
        ELBO's full data term (expected log joint of stars and latents plus the latents' entropy).
        """
        w = self.node_weights()
        if math.isnan(self._data_term):  # before the first update: the nodes' prior weights, a Gaussian constant
            latent = float(-0.5 * (self.responsibility * torch.log(2.0 * math.pi * self.node_sigma2)).sum())
        else:
            latent = self._data_term - self._quadratic
        return GaussianStatistics.from_node_weights(
            self.nodes.sightlines.grid,
            self.grid_cell,
            self.fraction,
            self.a,
            w,
            constant=float(w @ self.a2) - 2.0 * latent,
            n_stars=self.n_stars,
        )

    # ----------------------------------------------------------------------------------------------------------
    # the exact marginal likelihood for Monte Carlo ELBOs, and the posterior predictive

    def log_likelihood(self, density: torch.Tensor) -> torch.Tensor:
        """``Σ_i ln p(A_i | ρ)`` exactly, for density fields of shape ``(..., n_cells)`` in grid order (mag/pc)."""
        model = self.nodes.sightlines.extinction(density)  # (..., n_nodes)
        s2 = self._node_variance(model)
        e = (self.a - model) ** 2 / s2
        if self.noise == "student-t":
            nu = self.nu
            log_l = (
                math.lgamma(0.5 * (nu + 1.0))
                - math.lgamma(0.5 * nu)
                - 0.5 * torch.log(math.pi * nu * s2)
                - 0.5 * (nu + 1.0) * torch.log1p(e / nu)
            )
        else:
            log_l = -0.5 * e - 0.5 * torch.log(2.0 * math.pi * s2)
        per_star = _segment_logsumexp(self.log_prior + log_l, self.star, self.n_stars)
        if self.noise == "mixture":
            eps = self.outlier_fraction
            per_star = torch.logaddexp(
                per_star + math.log1p(-eps), torch.full_like(per_star, math.log(eps) + self.log_outlier_density)
            )
        return per_star.sum(-1)

    def predictive(self, cell_moments: torch.Tensor) -> dict[str, np.ndarray]:
        """Posterior predictive checks per star, from the moments of the fitted q(ρ).

        The predictive distribution of a star's observed extinction is approximated by
        ``Σ_k π_ik F((A - E[A_mod,ik]) / s_ik)``, ``s² = σ² + Var[A_mod,ik]``, F the noise model's CDF (the inlier
        Gaussian for the mixture). Its value at the observation is the PIT; ``Φ⁻¹(PIT)`` is the normalised
        residual, N(0, 1) for a calibrated model whatever the noise model.

        Returns
        -------
        dict of numpy.ndarray, shape (n_stars,)
            ``predicted`` and ``predicted_sd`` (mag), ``pit``, ``normalised_residual``, ``outlier_probability``
            (NaN without an outlier class), ``weight`` (E[λ]; 1 unless Student-t), ``flagged``.
        """
        return self.predictive_nodes(*self.node_moments(cell_moments))

    def predictive_nodes(self, mean_a: torch.Tensor, mean_a2: torch.Tensor) -> dict[str, np.ndarray]:
        """:meth:`predictive` from ``E[A_mod]`` and ``E[A_mod²]`` at the nodes (mag, mag²)."""
        var = (mean_a2 - mean_a * mean_a).clamp(min=0.0)
        s2 = self._node_variance(mean_a) + var
        prior = torch.exp(self.log_prior)
        n = self.n_stars
        z = ((self.a - mean_a) / torch.sqrt(s2)).cpu().numpy()
        if self.noise == "student-t":
            cdf = stats.t.cdf(z, df=self.nu)
            inflate = self.nu / (self.nu - 2.0) if self.nu > 2 else np.inf
        else:
            cdf = special.ndtr(z)
            inflate = 1.0
        star = self.nodes.star
        p = prior.cpu().numpy()
        pit = np.bincount(star, weights=p * cdf, minlength=n)
        mean = np.bincount(star, weights=p * mean_a.cpu().numpy(), minlength=n)
        second = np.bincount(star, weights=p * (s2.cpu().numpy() * inflate + mean_a.cpu().numpy() ** 2), minlength=n)
        pit[~self.has_nodes.cpu().numpy()] = np.nan
        residual = special.ndtri(np.clip(pit, 1e-12, 1.0 - 1e-12))
        outlier = self.outlier_probability.cpu().numpy() if self.noise == "mixture" else np.full(n, np.nan)
        flagged = outlier > OUTLIER_THRESHOLD if self.noise == "mixture" else np.abs(residual) > RESIDUAL_THRESHOLD
        return {
            "predicted": mean,
            "predicted_sd": np.sqrt(np.clip(second - mean * mean, 0.0, None)),
            "pit": pit,
            "normalised_residual": residual,
            "outlier_probability": outlier,
            "weight": self.weight.cpu().numpy().copy(),
            "flagged": flagged,
        }


def _gamma_kl(shape: float, rate: torch.Tensor, nu: float) -> torch.Tensor:
    """KL(Gamma(shape, rate) || Gamma(ν/2, ν/2)), nats (rates, not scales)."""
    a0 = b0 = 0.5 * nu
    return (
        (shape - a0) * special.digamma(shape)
        - math.lgamma(shape)
        + math.lgamma(a0)
        + a0 * (torch.log(rate) - math.log(b0))
        + shape * (b0 - rate) / rate
    )
