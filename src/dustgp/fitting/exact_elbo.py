"""The ELBO of the second-order method in closed form, its gradients, and q(u) carried across hyperparameters.

The ELBO in closed form
-----------------------
With whitened inducing values ``v ~ q(v) = N(m, S)`` and ``A = K_xz L_zz⁻ᵀ``, phi on the training cells is Gaussian,
``phi ~ N(c + A m, A S Aᵀ + K_xx - A Aᵀ)``: the low-rank part carried by the inducing points plus the conditional
covariance ``K_xx - Q_xx`` that they leave out (the paper's q(f), docs: Method §5, Eqs. A.6-A.7). Stars couple the
cells of their own sightline column only, and the Gaussian likelihood is quadratic in the log-normal density, so the
expected log-likelihood needs only each column's mean and covariance of phi and is exact
(:meth:`dustgp.sightlines.GaussianStatistics.expected_log_likelihood`): no Monte Carlo noise, a deterministic
objective that a line search can hold to, and a conditional variance that the stars see in training.

The covariance blocks are ``K_col T K_colᵀ + K_xx,col`` with ``T = L_zz⁻ᵀ (S - I) L_zz⁻¹``: one n × M × M product per
evaluation, and one more for the gradient (``Kᵀ G K``, with G the gradient per covariance block). That second
product is both the hyperparameters' gradient with respect to T and the curvature of the natural-gradient step on
q (:mod:`dustgp.fitting.newton`).

Precision: float64 throughout. The covariance blocks subtract ``K_col L_zz⁻ᵀ L_zz⁻¹ K_colᵀ`` from the prior, and
``L_zz⁻¹`` has entries as large as the condition number of K_zz: in float32 that cancellation costs ~1e-3 dex² at
M = 1000, more than the posterior variance of a well-constrained cell.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ..likelihood import StarLikelihood
from ..linalg import psd_cholesky
from ..model import JITTER
from ..projection import rbf_along_sightlines, rbf_cross_covariance, rbf_cross_covariance_vjp
from ..sightlines import GaussianStatistics
from .latent_information import missing_information_phi

__all__ = [
    "DTYPE",
    "Geometry",
    "NewtonProblem",
    "NewtonState",
    "evaluate",
    "inducing_cholesky",
    "pack",
    "rewhiten",
    "transport",
]

#: The second-order method computes in float64 (see the module's docstring).
DTYPE = torch.float64


@dataclass
class NewtonProblem:
    """What the ELBO is evaluated on: training cells grouped by sightline column, and the stars' statistics.

    Attributes
    ----------
    cells : torch.Tensor, shape (n_columns * n_d, 3)
        Cell centres (internal length units), column by column, cells of a column from the Sun outward.
    n_columns, n_d : int
    stats : GaussianStatistics
        float64.
    blocks : tuple
        ``stats.column_blocks()``.
    distances : torch.Tensor, shape (n_columns, n_d)
        Distance of each cell along its column (internal units), for the prior blocks K_xx,col.
    directions : torch.Tensor, shape (n_columns, 3)
        Unit vector of each column.
    fixed_z : torch.Tensor or None
        Inducing locations when they are not learned, (M, 3).
    learn_hyperparameters : bool
    count_missing : bool
        Whether the objective is :mod:`~dustgp.fitting.latent_information`'s J, the ELBO with the stars'
        latents summed over to second order (``missing_information="objective"``), rather than the ELBO.
    missing : torch.Tensor or None
        The stars' missing information in phi per column, ``(n_columns, n_d, n_d)``, dex⁻², held from the last
        update of the latents, when ``count_missing``.
    """

    cells: torch.Tensor
    n_columns: int
    n_d: int
    stats: GaussianStatistics
    blocks: tuple[torch.Tensor, torch.Tensor]
    distances: torch.Tensor
    directions: torch.Tensor
    fixed_z: torch.Tensor | None
    learn_hyperparameters: bool = True
    count_missing: bool = False
    missing: torch.Tensor | None = None

    @classmethod
    def build(
        cls,
        cells_grid_order: torch.Tensor,
        n_d: int,
        stats: GaussianStatistics,
        *,
        fixed_z: torch.Tensor | None,
        learn_hyperparameters: bool = True,
        count_missing: bool = False,
    ) -> NewtonProblem:
        """From cell centres in the grid's order (distance bins outermost, ``(n_d * n_columns, 3)``)."""
        n_columns = cells_grid_order.shape[0] // n_d
        cells = cells_grid_order.to(DTYPE).reshape(n_d, n_columns, 3).transpose(0, 1).contiguous()
        distances = cells.norm(dim=-1)
        stats = stats.to(dtype=DTYPE)
        return cls(
            cells=cells.reshape(-1, 3),
            n_columns=n_columns,
            n_d=n_d,
            stats=stats,
            blocks=stats.column_blocks(),
            distances=distances,
            directions=cells[:, -1] / distances[:, -1:],
            fixed_z=None if fixed_z is None else fixed_z.to(DTYPE),
            learn_hyperparameters=learn_hyperparameters,
            count_missing=count_missing,
        )

    def use_statistics(self, likelihood: StarLikelihood, cell_moments: torch.Tensor) -> None:
        """Take the statistics of ``likelihood`` after an update of its latents made at the q whose
        :func:`~dustgp.sightlines.cell_extinction_moments` are ``cell_moments`` (and their missing information,
        when it is counted)."""
        self.stats = likelihood.statistics()
        self.blocks = self.stats.column_blocks()
        if self.count_missing:
            self.missing = missing_information_phi(likelihood, cell_moments).to(DTYPE)

    def expected_log_likelihood(self, mean: torch.Tensor, covariance: torch.Tensor) -> torch.Tensor:
        """The data term of the objective (nats): ``E_q[ln p(A | ρ)]`` of the node stars, plus
        ``½ Σ tr(Σ_col C_col)`` with the held :attr:`missing` information when it is counted."""
        value = self.stats.expected_log_likelihood(mean, covariance, self.blocks)
        if self.missing is None:
            return value
        return value + 0.5 * (covariance * self.missing).sum()

    def prior_blocks(self, alpha: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
        """K_xx within each column, ``(n_columns, n_d, n_d)``, dex² (differentiable in alpha and gamma)."""
        return rbf_along_sightlines(self.distances, self.directions, gamma, alpha)

    def unpack(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(c, alpha, gamma, z)`` from the flat parameter vector."""
        z = theta[5:].reshape(-1, 3) if self.fixed_z is None else self.fixed_z
        return theta[0], theta[1].exp(), theta[2:5].exp(), z


def pack(c: float, alpha: float, gamma: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
    """The flat parameter vector ``(c, ln alpha, ln gamma, z)`` (z omitted when fixed)."""
    head = torch.cat([torch.tensor([c, math.log(alpha)], dtype=DTYPE), gamma.to(DTYPE).log().reshape(3)])
    return head if z is None else torch.cat([head, z.to(DTYPE).reshape(-1)])


@dataclass
class Geometry:
    """Everything that depends on theta alone, computed once per theta and shared by the q trials at it.

    Attributes
    ----------
    theta : torch.Tensor
    l_zz : torch.Tensor, (M, M)
        Cholesky factor of K_zz + jitter.
    x_inv : torch.Tensor, (M, M)
        ``L_zz⁻¹``.
    k_inv : torch.Tensor, (M, M)
        ``K_zz⁻¹ = L_zz⁻ᵀ L_zz⁻¹``.
    k : torch.Tensor, (n, M)
        K_xz on the training cells, column by column.
    kxx : torch.Tensor, (n_columns, n_d, n_d)
        Prior covariance of phi within each column.
    """

    theta: torch.Tensor
    l_zz: torch.Tensor
    x_inv: torch.Tensor
    k_inv: torch.Tensor
    k: torch.Tensor
    kxx: torch.Tensor

    @classmethod
    @torch.no_grad()
    def at(cls, problem: NewtonProblem, theta: torch.Tensor) -> Geometry:
        """Raises torch.linalg.LinAlgError when K_zz cannot be factorised even with added jitter."""
        _, alpha, gamma, z = problem.unpack(theta)
        l_zz = inducing_cholesky(problem, theta)
        eye = torch.eye(l_zz.shape[0], dtype=DTYPE, device=l_zz.device)
        x_inv = torch.linalg.solve_triangular(l_zz, eye, upper=False)
        return cls(
            theta=theta,
            l_zz=l_zz,
            x_inv=x_inv,
            k_inv=torch.cholesky_inverse(l_zz),
            k=rbf_cross_covariance(problem.cells, z, gamma, alpha),
            kxx=problem.prior_blocks(alpha, gamma),
        )


def inducing_cholesky(problem: NewtonProblem, theta: torch.Tensor) -> torch.Tensor:
    """L_zz, the Cholesky factor of K_zz + jitter·alpha·I, at ``theta`` (differentiable)."""
    _, alpha, gamma, z = problem.unpack(theta)
    eye = torch.eye(z.shape[0], dtype=DTYPE, device=z.device)
    jitter = JITTER[DTYPE] * float(alpha.detach())
    return psd_cholesky(rbf_cross_covariance(z, z, gamma, alpha) + jitter * eye, jitter)


@dataclass
class NewtonState:
    """A point (theta, q) with its exact ELBO; after :meth:`with_gradients`, the steps to take from it.

    ``m`` and ``l_precision`` (the Cholesky factor of Λ = S⁻¹) are whitened at ``geometry.theta``.
    """

    geometry: Geometry
    m: torch.Tensor
    l_precision: torch.Tensor
    elbo: float
    expected_log_likelihood: float
    kl: float
    mean: torch.Tensor  # (n_columns, n_d) posterior mean of phi
    variance: torch.Tensor  # (n_columns, n_d) posterior variance of phi
    grad_theta: torch.Tensor | None = None
    grad_m: torch.Tensor | None = None
    precision_target: torch.Tensor | None = None
    fisher: torch.Tensor | None = None
    _cache: dict = field(default_factory=dict, repr=False)
    _grad_cov: torch.Tensor | None = field(default=None, repr=False)  # ∂E/∂Σ per column, for floored_target
    _precision: torch.Tensor | None = field(default=None, repr=False)

    @property
    def theta(self) -> torch.Tensor:
        return self.geometry.theta

    @property
    def precision(self) -> torch.Tensor:
        """Λ = L_Λ L_Λᵀ: as the step that made this state formed it, else formed once (an M × M product)."""
        if self._precision is None:
            self._precision = self.l_precision @ self.l_precision.T
        return self._precision

    def with_gradients(self, problem: NewtonProblem) -> NewtonState:
        """Fill in the ELBO gradient in m, the natural-gradient target precision and the theta gradient."""
        geo, c = self.geometry, self._cache
        k, y, w = geo.k, c["y"], c["w"]
        n, m_size = k.shape
        g_mu, g_cov = torch.autograd.grad(c["ell"], [c["mean_leaf"], c["cov_leaf"]])
        g_cov = 0.5 * (g_cov + g_cov.transpose(1, 2))
        k_col = k.view(problem.n_columns, problem.n_d, m_size)
        g_k = torch.bmm(g_cov, k_col)  # n × M, reused below for G Y: fresh n × M arrays cost page faults
        grad_t = k.T @ g_k.view(n, m_size)  # Kᵀ G K: the second n × M × M product
        g_mu = g_mu.reshape(-1)
        # Aᵀ G A = ∂E/∂S = L_zz⁻¹ grad_t L_zz⁻ᵀ (grad_t is symmetric): two triangular solves, not two products
        half = torch.linalg.solve_triangular(geo.l_zz, grad_t, upper=False)
        curvature = torch.linalg.solve_triangular(geo.l_zz, half.T, upper=False)
        self.precision_target = torch.eye(m_size, dtype=DTYPE, device=k.device) - (curvature + curvature.T)
        grad_w = k.T @ g_mu
        self.grad_m = geo.x_inv @ grad_w - self.m
        self._grad_cov = g_cov
        if problem.learn_hyperparameters:
            grad_k = torch.bmm(g_cov, y.view_as(k_col), out=g_k).view(n, m_size).mul_(2.0)
            grad_k.addr_(g_mu, w)
            _, alpha, gamma, z = problem.unpack(geo.theta)
            k_zz = rbf_cross_covariance(z, z, gamma, alpha)
            self.grad_theta = _theta_gradient(problem, self, k_zz, grad_k, grad_t, grad_w, g_mu, g_cov)
            self.fisher = hyperparameter_fisher(z, gamma, k_zz, c["t"])
            # with the site held (transport), c moves the mean of phi by a = 1 + K T 1: the stars see c directly in
            # the cells the inducing points leave to the prior, which the pseudo-data's information does not count.
            # Their Gauss-Newton curvature along a is -2 aᵀ G a (the Hessian in the mean is 2 ∂E/∂Σ, Price's
            # theorem). Without it, Fisher steps in c overshot and c swung by MAX_HYPER_STEP, each swing cutting every
            # other hyperparameter's step to the cap's share (docs: Design notes, "Where newton's steps go")
            follow = (1.0 + k @ c["t"].sum(dim=1)).view(problem.n_columns, problem.n_d, 1)
            direct = -2.0 * float((follow.transpose(1, 2) @ g_cov @ follow).sum())
            self.fisher[0, 0] += max(direct, 0.0)
        self._cache = {}
        return self


def _theta_gradient(
    problem: NewtonProblem,
    state: NewtonState,
    k_zz: torch.Tensor,
    grad_k: torch.Tensor,
    grad_t: torch.Tensor,
    grad_w: torch.Tensor,
    g_mu: torch.Tensor,
    g_cov: torch.Tensor,
) -> torch.Tensor:
    """d ELBO / d theta at fixed q(u), from the gradients with respect to K_xz, T, w and the prior blocks.

    q(u) over ``u = c + L_zz v`` is held fixed, so T, w and the KL are functions of theta through ``K = K_zz``
    (jitter included) and c: with ``P = K⁻¹``, ``S_u`` the covariance of q(u), ``Q = P S_u P`` (so ``T = Q - P``),
    ``w = P (mu_u - c)`` and ``KL = ½ [tr(P S_u) + (mu_u - c)ᵀ P (mu_u - c) + ln|K|] + const``, the gradient of
    ``<T, G_T> + <w, g_w> - KL`` with respect to K is (``dP = -P dK P``)

        ``P G_T P - Q G_T P - P G_T Q - sym((P g_w) wᵀ) - ½ (P - Q - w wᵀ)``,

    and with respect to c, ``-(P 1)·g_w + 1·w``. Closed form, so the M × M work is four products where autograd
    through the Cholesky factor and its triangular solves takes thirteen products and nine solves (docs: Design
    notes, "Where newton's steps go"). K's gradient reaches z, gamma and alpha through
    :func:`rbf_cross_covariance_vjp`, as K_xz's does; the prior blocks K_xx (n_d × n_d per column) go through
    autograd.
    """
    geo = state.geometry
    _, alpha, gamma, z = problem.unpack(geo.theta)
    p, w = geo.k_inv, state._cache["w"]
    q = state._cache["t"] + p
    gt = 0.5 * (grad_t + grad_t.T)
    gt_p = gt @ p
    q_gt_p = q @ gt_p
    p_gw = p @ grad_w
    grad_kzz = p @ gt_p - q_gt_p - q_gt_p.T - 0.5 * (torch.outer(p_gw, w) + torch.outer(w, p_gw))
    grad_kzz -= 0.5 * (p - q - torch.outer(w, w))
    gz_zz, gg_zz, ga_zz = rbf_cross_covariance_vjp(z, z, gamma, alpha, k_zz, grad_kzz)
    gz, gg, ga = rbf_cross_covariance_vjp(problem.cells, z, gamma, alpha, geo.k, grad_k)
    log_scales = geo.theta[1:5].detach().clone().requires_grad_()
    with torch.enable_grad():
        kxx = problem.prior_blocks(log_scales[0].exp(), log_scales[1:].exp())
        (grad_kxx,) = torch.autograd.grad((kxx * g_cov).sum(), log_scales)
    grad = torch.zeros_like(geo.theta)
    ones = torch.ones_like(w)
    grad[0] = g_mu.sum() - p_gw @ ones + w @ ones
    grad[1] = alpha * (ga + ga_zz) + grad_kxx[0]
    grad[2:5] = gamma * (gg + gg_zz) + grad_kxx[1:]
    if problem.fixed_z is None:
        # K_zz holds z in both arguments: by its symmetry, the first argument's share equals the second's
        grad[5:] = (gz + 2.0 * gz_zz).reshape(-1)
    return grad


def hyperparameter_fisher(z: torch.Tensor, gamma: torch.Tensor, k_zz: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Fisher information of ``(c, ln alpha, ln gamma_x, ln gamma_y, ln gamma_z)`` given q's pseudo-data, (5, 5).

    q(u) is the prior times a Gaussian site, ``q(u) ∝ p(u | theta) N(ũ; u, W⁻¹)`` with ``W = S_u⁻¹ - K⁻¹ ⪰ 0``
    (Λ ⪰ I in whitened terms, which the natural-gradient step keeps). Its pseudo-data ũ have the marginal
    ``N(c 1, K + W⁻¹)``, whose Fisher information (Rasmussen & Williams 2006, §5.4; the Gauss-Newton curvature of
    the evidence) is

        ``I_ij = ½ tr(C⁻¹ ∂_i K C⁻¹ ∂_j K)``,   ``I_cc = 1ᵀ C⁻¹ 1``,   ``I_ci = 0``,

    with ``C⁻¹ = (K + W⁻¹)⁻¹ = K⁻¹ - K⁻¹ S_u K⁻¹ = -T``, ``∂K/∂ln alpha = K`` and
    ``∂K/∂ln gamma_d = K ∘ (z_d - z_dᵀ)² / gamma_d²``. It counts only the directions the data constrain
    (``I_alpha,alpha = ½ ||I - S||_F²`` in whitened terms), where the curvature at fixed q(u) also counts the prior's:
    that is why L-BFGS steps at fixed q(u) crawled (docs: Design notes, "Where newton's steps go"). Four M × M
    products. :meth:`NewtonState.with_gradients` adds to ``I_cc`` what the pseudo-data leave out: the stars'
    information on c through the cells the inducing points leave to the prior.

    Parameters
    ----------
    z : torch.Tensor, shape (M, 3)
    gamma : torch.Tensor, shape (3,)
        Inducing locations and scale lengths, internal units.
    k_zz : torch.Tensor, shape (M, M)
        K_zz without jitter.
    t : torch.Tensor, shape (M, M)
        ``T = L_zz⁻ᵀ (S - I) L_zz⁻¹``.
    """
    g = -t
    products = [g @ k_zz]
    for d in range(3):
        products.append(g @ (k_zz * ((z[:, None, d] - z[None, :, d]) / gamma[d]).square_()))
    info = torch.zeros(5, 5, dtype=t.dtype, device=t.device)
    for i, a in enumerate(products):
        for j in range(i, len(products)):
            info[i + 1, j + 1] = info[j + 1, i + 1] = 0.5 * (a * products[j].T).sum()
    info[0, 0] = g.sum()
    return info


@torch.no_grad()
def transport(
    old: Geometry,
    new: Geometry,
    m: torch.Tensor,
    l_precision: torch.Tensor,
    precision: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Whitened ``(m, L_Λ, Λ)`` at ``new.theta`` of the posterior with the same site as q at ``old.theta``.

    q(u) ∝ p(u | theta) t(u): the Gaussian site t carries what the stars say, the prior the rest. Moving theta
    with the site held, q follows the new prior where the stars say little and stays where they constrain it
    (in whitened terms ``Λ_new = I + Rᵀ (Λ - I) R``, ``R = L_old⁻¹ L_new``). Held at fixed q(u) instead, the
    thousand directions the stars leave to the prior would mismatch the new prior, and their KL would hold every
    hyperparameter step short. Λ ⪰ I gives Λ_new ⪰ I.

    The mean: with ``b = (Λ - I) L_old⁻¹ (c_old - c_new) 1 + Λ m``, ``m_new = Λ_new⁻¹ Rᵀ b`` (from the site's
    natural parameters ``L_old⁻ᵀ (Λ - I) L_old⁻¹`` and ``L_old⁻ᵀ [(Λ - I) L_old⁻¹ c_old 1 + Λ m]``). ``precision``,
    Λ at ``old.theta`` where the caller has it, saves forming it from ``l_precision``.
    """
    r = torch.linalg.solve_triangular(old.l_zz, new.l_zz, upper=False)
    eye = torch.eye(m.shape[0], dtype=m.dtype, device=m.device)
    if precision is None:
        precision = l_precision @ l_precision.T
    site = precision - eye
    target = eye + r.T @ site @ r
    target = 0.5 * (target + target.T)
    l_prec_new, info = torch.linalg.cholesky_ex(target)
    if int(info):
        raise torch.linalg.LinAlgError("the transported precision is not positive definite")
    shift = old.x_inv.sum(dim=1) * float(old.theta[0] - new.theta[0])  # L_old⁻¹ (c_old - c_new) 1
    b = site @ shift + precision @ m
    half = torch.linalg.solve_triangular(l_prec_new, (r.T @ b)[:, None], upper=False)
    return torch.linalg.solve_triangular(l_prec_new.T, half, upper=True)[:, 0], l_prec_new, target


@torch.no_grad()
def rewhiten(
    old: Geometry, new: Geometry, m: torch.Tensor, l_precision: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Whitened ``(m, L_Λ)`` at ``new.theta`` of the same q(u) over the inducing values ``u = c + L_zz v``.

    The point at which :meth:`NewtonState.with_gradients` differentiates in theta (its tests move theta so); the
    optimiser's trial steps carry q by :func:`transport` instead, which lets the directions the stars leave to the
    prior follow it.
    """
    shift = old.theta[0] - new.theta[0] + old.l_zz @ m
    mean_new = torch.linalg.solve_triangular(new.l_zz, shift[:, None], upper=False)[:, 0]
    r = torch.linalg.solve_triangular(old.l_zz, new.l_zz, upper=False)  # Λ_new = Rᵀ Λ R, R = L_old⁻¹ L_new
    factor = r.T @ l_precision
    l_prec_new, info = torch.linalg.cholesky_ex(factor @ factor.T)
    if int(info):
        raise torch.linalg.LinAlgError("the rewhitened precision is not positive definite")
    return mean_new, l_prec_new


@torch.no_grad()
def evaluate(
    problem: NewtonProblem,
    geometry: Geometry,
    m: torch.Tensor,
    l_precision: torch.Tensor,
    precision: torch.Tensor | None = None,
) -> NewtonState:
    """The exact ELBO at (theta, q); keeps what :meth:`NewtonState.with_gradients` needs (and Λ, if given)."""
    geo = geometry
    m_size = m.shape[0]
    eye = torch.eye(m_size, dtype=DTYPE, device=m.device)
    p_inv = torch.linalg.solve_triangular(l_precision, eye, upper=False)  # S = L_Λ⁻ᵀ L_Λ⁻¹
    half = torch.linalg.solve_triangular(l_precision, geo.x_inv, upper=False)  # L_Λ⁻¹ L_zz⁻¹
    t = half.T @ half - geo.k_inv  # L_zz⁻ᵀ (S - I) L_zz⁻¹
    w = geo.x_inv.T @ m  # L_zz⁻ᵀ m
    y = geo.k @ t  # the n × M × M product
    shape = (problem.n_columns, problem.n_d, m_size)
    cov = torch.baddbmm(geo.kxx, y.view(shape), geo.k.view(shape).transpose(1, 2))
    mean = (geo.theta[0] + geo.k @ w).view(problem.n_columns, problem.n_d)
    mean_leaf = mean.requires_grad_()
    cov_leaf = cov.requires_grad_()
    with torch.enable_grad():
        ell = problem.expected_log_likelihood(mean_leaf, cov_leaf)
    kl = 0.5 * (float((p_inv * p_inv).sum()) + float(m @ m) - m_size) + float(l_precision.diagonal().log().sum())
    return NewtonState(
        geometry=geo,
        m=m,
        l_precision=l_precision,
        elbo=float(ell.detach()) - kl,
        expected_log_likelihood=float(ell.detach()),
        kl=kl,
        mean=mean.detach(),
        variance=cov.detach().diagonal(dim1=-2, dim2=-1).clone(),
        _cache={"y": y, "w": w, "t": t, "ell": ell, "mean_leaf": mean_leaf, "cov_leaf": cov_leaf},
        _precision=precision,
    )
