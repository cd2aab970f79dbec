"""Second-order maximisation of the ELBO: natural-gradient steps on q(v), quasi-Newton steps on the hyperparameters.

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
product is both the hyperparameters' gradient with respect to T and the curvature q needs:

Natural-gradient update of q (Khan & Rue 2023; Salimbeni et al. 2018)
---------------------------------------------------------------------
By Price's theorem ``∂E/∂S = ½ Aᵀ E[∇²ℓ] A``, so the fixed point of the ELBO in S is
``S⁻¹ = I - 2 ∂E/∂S = I + Aᵀ E[-∇²_phi ℓ] A`` and a natural-gradient step of length β is

    Λ ← (1 - β) Λ + β (I - 2 ∂E/∂S),        m ← m + β Λ⁻¹ ∂ELBO/∂m.

At β = 1 this is a Newton step with the expected curvature, which the Gauss-Newton (Fisher) term dominates, where
Adam moves the M(M+1)/2 entries of L_q by noisy gradients. The precision moves by half of β
(:data:`PRECISION_DAMPING`), and β is capped so that no cell's mean phi moves by more than 1 dex. Should the target
precision be indefinite (the residual term of the Hessian can be negative), each column's curvature block has its
negative eigenvalues floored at zero, the Gauss-Newton choice, so that Λ ⪰ I.

Hyperparameters and inducing locations
--------------------------------------
``theta = (c, ln alpha, ln gamma_x, ln gamma_y, ln gamma_z, z)`` move by L-BFGS directions (one memory for the
hyperparameters, one for the locations) on the ELBO at fixed q(u) over the inducing values ``u = c + L_zz v``, the KL
then depending on theta. At fixed whitened q(v) instead, a change of the scale lengths scrambles the map and only
tiny theta steps are accepted. q follows theta closely (one natural-gradient step per outer step), so the gradient
at fixed q is that of max_q ELBO (envelope theorem). (The gradient of a Laplace evidence at a fixed mode misses
dv*/dθ and drifts toward low density.)

Every accepted step raises the ELBO: the joint proposal (β, t) is tried at t = 1, then with shorter theta steps,
then q alone with shorter β, and refused unless the exact ELBO increases.

Precision: float64 throughout. The covariance blocks subtract ``K_col L_zz⁻ᵀ L_zz⁻¹ K_colᵀ`` from the prior, and
``L_zz⁻¹`` has entries as large as the condition number of K_zz: in float32 that cancellation costs ~1e-3 dex² at
M = 1000, more than the posterior variance of a well-constrained cell.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import torch

from .kernels import rbf_along_sightlines, rbf_cross_covariance, rbf_cross_covariance_vjp
from .likelihood import StarLikelihood, cell_extinction_moments
from .model import JITTER, _cholesky
from .sightlines import GaussianStatistics

__all__ = ["Geometry", "NewtonOptimizer", "NewtonProblem", "NewtonState", "batched_eigh", "evaluate", "propose"]

DTYPE = torch.float64

#: The precision moves by half the natural-gradient step: the target depends on S itself (through the log-normal
#: moments), and full steps made the posterior spread oscillate by 5-15% per step on the Section 3 problem
#: (held hyperparameters), where half steps settled monotonically.
PRECISION_DAMPING = 0.5


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

    @classmethod
    def build(
        cls,
        cells_grid_order: torch.Tensor,
        n_d: int,
        stats: GaussianStatistics,
        *,
        fixed_z: torch.Tensor | None,
        learn_hyperparameters: bool = True,
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
        )

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
            k_inv=x_inv.T @ x_inv,
            k=rbf_cross_covariance(problem.cells, z, gamma, alpha),
            kxx=problem.prior_blocks(alpha, gamma),
        )


def inducing_cholesky(problem: NewtonProblem, theta: torch.Tensor) -> torch.Tensor:
    """L_zz, the Cholesky factor of K_zz + jitter·alpha·I, at ``theta`` (differentiable)."""
    _, alpha, gamma, z = problem.unpack(theta)
    eye = torch.eye(z.shape[0], dtype=DTYPE, device=z.device)
    jitter = JITTER[DTYPE] * float(alpha.detach())
    return _cholesky(rbf_cross_covariance(z, z, gamma, alpha) + jitter * eye, jitter)


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
    _cache: dict = field(default_factory=dict, repr=False)
    _grad_cov: torch.Tensor | None = field(default=None, repr=False)  # ∂E/∂Σ per column, for floored_target

    @property
    def theta(self) -> torch.Tensor:
        return self.geometry.theta

    def with_gradients(self, problem: NewtonProblem) -> NewtonState:
        """Fill in the ELBO gradient in m, the natural-gradient target precision and the theta gradient."""
        geo, c = self.geometry, self._cache
        k, y, w = geo.k, c["y"], c["w"]
        n, m_size = k.shape
        g_mu, g_cov = torch.autograd.grad(c["ell"], [c["mean_leaf"], c["cov_leaf"]])
        g_cov = 0.5 * (g_cov + g_cov.transpose(1, 2))
        k_col = k.view(problem.n_columns, problem.n_d, m_size)
        grad_t = k.T @ torch.bmm(g_cov, k_col).view(n, m_size)  # Kᵀ G K: the second n × M × M product
        g_mu = g_mu.reshape(-1)
        curvature = geo.x_inv @ grad_t @ geo.x_inv.T  # Aᵀ G A = ∂E/∂S
        self.precision_target = torch.eye(m_size, dtype=DTYPE, device=k.device) - (curvature + curvature.T)
        grad_w = k.T @ g_mu
        self.grad_m = geo.x_inv @ grad_w - self.m
        self._grad_cov = g_cov
        if problem.learn_hyperparameters:
            grad_k = torch.bmm(g_cov, y.view_as(k_col)).view(n, m_size).mul_(2.0)
            grad_k.add_(g_mu[:, None] * w[None, :])
            self.grad_theta = _theta_gradient(problem, self, grad_k, grad_t, grad_w, g_mu, g_cov)
        self._cache = {}
        return self


def _theta_gradient(
    problem: NewtonProblem,
    state: NewtonState,
    grad_k: torch.Tensor,
    grad_t: torch.Tensor,
    grad_w: torch.Tensor,
    g_mu: torch.Tensor,
    g_cov: torch.Tensor,
) -> torch.Tensor:
    """d ELBO / d theta at fixed q(u), from the gradients with respect to K_xz, T, w and the prior blocks.

    q(u) over ``u = c + L_zz v`` is held fixed, so T, w and the KL are functions of theta through K_zz:
    ``T = K_zz⁻¹ B Bᵀ K_zz⁻¹ - K_zz⁻¹``, ``w = K_zz⁻¹ (μ_u - c)``, ``KL = KL(N(μ_u, B Bᵀ) || N(c, K_zz))``.
    """
    geo = state.geometry
    m_size = geo.l_zz.shape[0]
    eye = torch.eye(m_size, dtype=DTYPE, device=geo.l_zz.device)
    p_inv = torch.linalg.solve_triangular(state.l_precision, eye, upper=False)
    b = geo.l_zz @ p_inv.T  # S_u = B Bᵀ
    mu_u = geo.theta[0] + geo.l_zz @ state.m
    th = geo.theta.detach().clone().requires_grad_()
    c, alpha, gamma, z = problem.unpack(th)
    with torch.enable_grad():
        l_zz = inducing_cholesky(problem, th)
        xb = torch.linalg.solve_triangular(l_zz, b, upper=False)
        kinv_b = torch.linalg.solve_triangular(l_zz.T, xb, upper=True)
        x_inv = torch.linalg.solve_triangular(l_zz, eye, upper=False)  # (torch.cholesky_inverse is far slower)
        t = kinv_b @ kinv_b.T - x_inv.T @ x_inv
        r = torch.linalg.solve_triangular(l_zz, (mu_u - c)[:, None], upper=False)[:, 0]
        w = torch.linalg.solve_triangular(l_zz.T, r[:, None], upper=True)[:, 0]
        kl = 0.5 * ((xb * xb).sum() + r @ r) + l_zz.diagonal().log().sum()
        kxx = problem.prior_blocks(alpha, gamma)
        gz, gg, ga = rbf_cross_covariance_vjp(problem.cells, z.detach(), gamma.detach(), alpha.detach(), geo.k, grad_k)
        surrogate = (t * grad_t).sum() + (w * grad_w).sum() + (kxx * g_cov).sum() + c * g_mu.sum()
        surrogate = surrogate + (gamma * gg).sum() + alpha * ga - kl
        if problem.fixed_z is None:
            surrogate = surrogate + (z * gz).sum()
        (grad,) = torch.autograd.grad(surrogate, th)
    return grad


@torch.no_grad()
def rewhiten(
    old: Geometry, new: Geometry, m: torch.Tensor, l_precision: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Whitened ``(m, L_Λ)`` at ``new.theta`` of the same q(u) over the inducing values ``u = c + L_zz v``.

    Hyperparameters move at fixed q(u), not at fixed q(v): the whitened coordinates of a map change with the
    scale lengths, the values at the inducing points much less, so q stays near its optimum as theta moves.
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
def evaluate(problem: NewtonProblem, geometry: Geometry, m: torch.Tensor, l_precision: torch.Tensor) -> NewtonState:
    """The exact ELBO at (theta, q); keeps what :meth:`NewtonState.with_gradients` needs."""
    geo = geometry
    m_size = m.shape[0]
    eye = torch.eye(m_size, dtype=DTYPE, device=m.device)
    p_inv = torch.linalg.solve_triangular(l_precision, eye, upper=False)  # S = L_Λ⁻ᵀ L_Λ⁻¹
    half = p_inv @ geo.x_inv
    t = half.T @ half - geo.k_inv  # L_zz⁻ᵀ (S - I) L_zz⁻¹
    w = geo.x_inv.T @ m  # L_zz⁻ᵀ m
    y = geo.k @ t  # the n × M × M product
    shape = (problem.n_columns, problem.n_d, m_size)
    cov = torch.baddbmm(geo.kxx, y.view(shape), geo.k.view(shape).transpose(1, 2))
    mean = (geo.theta[0] + geo.k @ w).view(problem.n_columns, problem.n_d)
    mean_leaf = mean.requires_grad_()
    cov_leaf = cov.requires_grad_()
    with torch.enable_grad():
        ell = problem.stats.expected_log_likelihood(mean_leaf, cov_leaf, problem.blocks)
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
        _cache={"y": y, "w": w, "ell": ell, "mean_leaf": mean_leaf, "cov_leaf": cov_leaf},
    )


def precision_solve(l_precision: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``Λ⁻¹ b`` from the Cholesky factor of Λ (two triangular solves; torch.cholesky_solve is slower here)."""
    half = torch.linalg.solve_triangular(l_precision, b[:, None], upper=False)
    return torch.linalg.solve_triangular(l_precision.T, half, upper=True)[:, 0]


def batched_eigh(blocks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.linalg.eigh`` over a batch of small matrices, on one thread.

    On the CPU, torch's threaded batched eigh is far slower on many small blocks than one thread (docs: Design
    notes, "Batched eigh").
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return torch.linalg.eigh(blocks)
    finally:
        torch.set_num_threads(threads)


def floored_target(state: NewtonState, problem: NewtonProblem) -> torch.Tensor:
    """The target precision with each column's curvature ``-2 ∂E/∂Σ_col`` made positive semi-definite.

    The expected Hessian of the log-likelihood in phi is the Gauss-Newton term (positive semi-definite) plus a
    residual term that can be negative where the model overshoots the data; flooring the negative eigenvalues
    of each n_d × n_d block (cheap) keeps Λ ⪰ I. One more n × M × M product; used only when the exact target
    is not positive definite.
    """
    geo = state.geometry
    values, vectors = batched_eigh(-2.0 * state._grad_cov)
    curvature_blocks = (vectors * values.clamp(min=0.0)[:, None, :]) @ vectors.transpose(1, 2)
    n, m_size = geo.k.shape
    k_col = geo.k.view(problem.n_columns, problem.n_d, m_size)
    inner = geo.k.T @ torch.bmm(curvature_blocks, k_col).view(n, m_size)
    curvature = geo.x_inv @ inner @ geo.x_inv.T
    return torch.eye(m_size, dtype=DTYPE, device=geo.k.device) + 0.5 * (curvature + curvature.T)


def propose(state: NewtonState, beta: float, problem: NewtonProblem) -> tuple[torch.Tensor, torch.Tensor] | None:
    """q after a natural-gradient step of length ``beta``: ``(m, L_Λ)``, or None if Λ is not positive definite."""
    precision = state.l_precision @ state.l_precision.T
    for attempt in range(2):
        if attempt:  # the exact target was indefinite: floor it once and keep the floored one
            if state._grad_cov is None:
                return None
            state.precision_target, state._grad_cov = floored_target(state, problem), None
        beta_s = PRECISION_DAMPING * beta
        blended = (1.0 - beta_s) * precision + beta_s * state.precision_target
        l_new, info = torch.linalg.cholesky_ex(0.5 * (blended + blended.T))
        if int(info) == 0:
            return state.m + beta * precision_solve(l_new, state.grad_m), l_new
    return None


class LBFGS:
    """Limited-memory BFGS directions for *ascent* on theta (Nocedal & Wright 2006, Algorithm 7.4).

    Curvature pairs whose ``sᵀy`` is not positive (possible, since q moves between steps) are skipped.
    """

    def __init__(self, history: int = 10, first_step: float = 0.05) -> None:
        self.pairs: deque[tuple[torch.Tensor, torch.Tensor]] = deque(maxlen=history)
        self.first_step = first_step

    def direction(self, grad: torch.Tensor) -> torch.Tensor:
        if not self.pairs:
            return grad * (self.first_step / grad.abs().max().clamp(min=1e-30))
        q = grad.clone()
        alphas = []
        for s, y in reversed(self.pairs):
            a = (s @ q) / (y @ s)
            q -= a * y
            alphas.append(a)
        s, y = self.pairs[-1]
        r = q * ((s @ y) / (y @ y))
        for (s, y), a in zip(self.pairs, reversed(alphas), strict=True):
            b = (y @ r) / (y @ s)
            r += s * (a - b)
        return r

    def update(self, step: torch.Tensor, grad_old: torch.Tensor, grad_new: torch.Tensor) -> None:
        if step.numel() == 0:
            return
        y = grad_old - grad_new  # the change of the gradient of -ELBO
        if float(step @ y) > 1e-12 * float(step.norm() * y.norm()):
            self.pairs.append((step.clone(), y.clone()))


def relative_change(old: NewtonState, new: NewtonState) -> tuple[float, float]:
    """q90 over cells of the relative change of the median density, and of the posterior std of phi."""
    median = (torch.pow(10.0, new.mean - old.mean) - 1.0).abs().flatten()
    ratio = (new.variance.clamp(min=1e-300) / old.variance.clamp(min=1e-300)).sqrt()
    spread = (ratio - 1.0).abs().flatten()
    return float(np.quantile(median.cpu().numpy(), 0.9)), float(np.quantile(spread.cpu().numpy(), 0.9))


class NewtonOptimizer:
    """Outer steps from a starting point; each accepted step raises the exact ELBO.

    Parameters
    ----------
    problem : NewtonProblem
    theta, m, l_precision : torch.Tensor
        Starting point (float64), q whitened at theta.
    warmup : int
        Steps of q alone before theta moves: far from q's optimum the theta gradient pulls the hyperparameters
        toward explaining the misfit of a q that is about to change anyway.
    likelihood : StarLikelihood, optional
        A likelihood with latent variables (distance nodes, outlier flags, t scales): their closed-form posteriors
        are updated at every accepted point and ``problem.stats`` replaced by the node stars' statistics, which
        raises the ELBO again (coordinate ascent; see :mod:`dustgp.likelihood`).

    Attributes
    ----------
    cell_moments : torch.Tensor, shape (5, n_columns, n_d)
        :func:`~dustgp.likelihood.cell_extinction_moments` at the current state (for posterior predictive checks).
    """

    #: fractions of the L-BFGS theta step tried (with a full natural-gradient step of q) before q alone
    THETA_FRACTIONS = (1.0, 0.25, 0.05)
    #: natural-gradient step lengths of q tried, as fractions of the longest allowed
    BETAS = (1.0, 0.5, 0.25, 0.1, 0.03, 0.01)
    #: largest change of any theta component in one step (ln alpha, ln gamma, c in dex, z in length units)
    MAX_THETA_STEP = 0.3
    #: largest change of the mean of phi in any cell in one step, dex: Newton steps on a log-normal model
    #: overshoot where the model is far below the data (the curvature there is that of a tiny density)
    MAX_PHI_STEP = 1.0

    def __init__(
        self,
        problem: NewtonProblem,
        theta: torch.Tensor,
        m: torch.Tensor,
        l_precision: torch.Tensor,
        *,
        warmup: int = 2,
        likelihood: StarLikelihood | None = None,
    ) -> None:
        self.problem = problem
        self.warmup = warmup
        self.likelihood = likelihood
        self.lbfgs = (LBFGS(), LBFGS())  # hyperparameters, inducing locations
        self.steps = 0
        self.cell_moments: torch.Tensor | None = None
        state = evaluate(problem, Geometry.at(problem, theta), m, l_precision)
        self.state = self._refresh(state).with_gradients(problem)

    def _refresh(self, state: NewtonState) -> NewtonState:
        """Keep the cell moments of ``state``; update the latent posteriors there and re-evaluate its ELBO."""
        cache = state._cache
        mean, cov = cache["mean_leaf"], cache["cov_leaf"]
        with torch.no_grad():
            self.cell_moments = cell_extinction_moments(mean.detach(), cov.detach(), self.problem.stats.path_lengths)
        if self.likelihood is None or self.likelihood.static:
            return state
        self.likelihood.update(self.cell_moments)
        stats = self.likelihood.statistics()
        self.problem.stats, self.problem.blocks = stats, stats.column_blocks()
        with torch.enable_grad():
            ell = stats.expected_log_likelihood(mean, cov, self.problem.blocks)
        cache["ell"] = ell
        state.expected_log_likelihood = float(ell.detach())
        state.elbo = state.expected_log_likelihood - state.kl
        return state

    def _beta_max(self, state: NewtonState) -> float:
        geo = state.geometry
        step = precision_solve(state.l_precision, state.grad_m)
        change = (geo.k @ (geo.x_inv.T @ step)).abs().max()
        return min(1.0, self.MAX_PHI_STEP / float(change.clamp(min=1e-300)))

    def _theta_direction(self, state: NewtonState) -> torch.Tensor:
        """L-BFGS directions for the hyperparameters and for the inducing locations, each with its own memory.

        Their curvatures differ by orders of magnitude (five global numbers against M local points), and one
        L-BFGS scaling for both would hold the locations to the hyperparameters' step.
        """
        parts = []
        for lbfgs, part in zip(self.lbfgs, (slice(0, 5), slice(5, None)), strict=True):
            grad = state.grad_theta[part]
            if grad.numel() == 0:
                continue
            direction = lbfgs.direction(grad)
            if float(direction @ grad) <= 0.0:  # q moved under the curvature pairs: start afresh
                lbfgs.pairs.clear()
                direction = lbfgs.direction(grad)
            parts.append(direction * min(1.0, self.MAX_THETA_STEP / float(direction.abs().max().clamp(min=1e-300))))
        return torch.cat(parts)

    def step(self) -> tuple[NewtonState, NewtonState] | None:
        """One outer step: ``(before, after)``, or None when no trial step raised the ELBO."""
        old = self.state
        beta_max = self._beta_max(old)
        trials: list[tuple[float, float]] = []
        if self.problem.learn_hyperparameters and self.steps >= self.warmup:
            direction = self._theta_direction(old)
            trials += [(beta_max, fraction) for fraction in self.THETA_FRACTIONS]
        trials += [(beta_max * beta, 0.0) for beta in self.BETAS]
        for beta, fraction in trials:
            q = propose(old, beta, self.problem)
            if q is None:
                continue
            try:
                geometry = old.geometry
                if fraction:
                    geometry = Geometry.at(self.problem, old.theta + fraction * direction)
                    q = rewhiten(old.geometry, geometry, *q)
                candidate = evaluate(self.problem, geometry, *q)
            except torch.linalg.LinAlgError:
                continue
            if math.isfinite(candidate.elbo) and candidate.elbo > old.elbo:
                self._refresh(candidate).with_gradients(self.problem)
                if fraction:
                    for lbfgs, part in zip(self.lbfgs, (slice(0, 5), slice(5, None)), strict=True):
                        lbfgs.update(
                            (candidate.theta - old.theta)[part], old.grad_theta[part], candidate.grad_theta[part]
                        )
                self.state = candidate
                self.steps += 1
                return old, candidate
            if fraction == self.THETA_FRACTIONS[-1]:
                for lbfgs in self.lbfgs:
                    lbfgs.pairs.clear()  # no theta step along this direction helped: forget its curvature
        return None
