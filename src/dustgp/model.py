"""The Gaussian-process prior on phi = log10(density) and its sparse variational posterior.

Prior (docs: Method §3, paper Eqs. 1-2): phi ~ GP(c, k) with

.. math:: k(x_1, x_2) = \\alpha \\exp\\Big(-\\tfrac12 \\sum_{k \\in \\{x,y,z\\}} (x_{1k} - x_{2k})^2 / \\gamma_k^2\\Big)

in heliocentric Cartesian coordinates. The variational posterior (Sects. 2.3-2.4) is the whitened formulation
(that of GPyTorch's ``VariationalStrategy``): M inducing points z, ``u = c + L_zz v`` with ``L_zz L_zzᵀ = K_zz``
and a full-covariance Gaussian ``q(v) = N(m, S)``, ``S = L_q L_qᵀ``, initialised at m = 0, S = I.

Joint sampling (why it is done this way)
----------------------------------------
A star's extinction sums correlated log-normal cells, so samples of phi must be *joint* across cells. We draw
``v ~ q(v)`` and project it, which gives exact joint samples of the low-rank part of q(phi):

.. math:: \\phi = c + K_{xz} L_{zz}^{-\\top} v, \\qquad v = m + L_q \\varepsilon

It costs one pass over the n × M cross-covariance per batch of samples (GPyTorch's default Pyro guide instead draws
independent per-cell marginals, and its Lanczos joint sampler builds a dense n × n kernel). The per-cell
conditional variance ``diag(K_xx - K_xz K_zz⁻¹ K_zx)`` is not part of the trained model (training would pay
n M² per iteration for it); prediction can add it as independent noise on request (``cell_variance=True``), at
the price of extinction biased high where it is large (see :func:`dustgp.prediction.predict`).

Coordinates inside the model are divided by ``length_unit`` (pc) so that all learnable quantities are of order
one; :meth:`DustGP.hyperparameters` reports them in physical units.

The model owns its parameters: q(v) is three tensors of its own (the mean m, the strict lower triangle of L_q and
log diag(L_q)), the inducing locations a fourth, and the mean and kernel are GPyTorch's ``ConstantMean`` and
``ScaleKernel(RBFKernel)``, read through their public properties. :meth:`DustGP.parameter_groups` says which
parameter plays which role, so that optimisers choose rates by role rather than by name.
"""

from __future__ import annotations

import math

import gpytorch
import torch
from torch.autograd.function import once_differentiable

from .linalg import psd_cholesky
from .projection import Workspace, rbf_cross_covariance, rbf_project

__all__ = ["DustGP"]

#: Jitter added to K_zz (in units of the prior variance alpha) before its Cholesky factorisation, per dtype:
#: inducing points closer than a few percent of a scale length make K_zz singular in float32 otherwise.
JITTER = {torch.float32: 1e-4, torch.float64: 1e-6}


class _WhitenedProjection(torch.autograd.Function):
    """``W = L⁻ᵀ V`` with ``L = chol(K)``, differentiable in K and V with O(M²S) work besides two solves.

    For a loss ℓ, with ``B = L⁻¹ ∂ℓ/∂W``: ``∂ℓ/∂V = B`` and ``∂ℓ/∂L = -W Bᵀ``, so the ``Lᵀ ∂ℓ/∂L`` of the
    Cholesky backward (Murray 2016, arXiv:1602.07527) is ``-V Bᵀ``, an M × S by S × M product, where the
    generic backward multiplies two M × M matrices. The rest is that backward:
    ``∂ℓ/∂K = L⁻ᵀ Ψ L⁻¹`` with ``Ψ = ½(T + T_strictᵀ)``, ``T = tril(Lᵀ ∂ℓ/∂L)``.
    """

    @staticmethod
    def forward(ctx, k_zz: torch.Tensor, v: torch.Tensor, jitter: float) -> torch.Tensor:  # type: ignore[override]
        l_zz = psd_cholesky(k_zz, jitter)
        w = torch.linalg.solve_triangular(l_zz.T, v, upper=True)
        ctx.save_for_backward(l_zz, v)
        return w

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_w: torch.Tensor):  # type: ignore[override]
        l_zz, v = ctx.saved_tensors
        b = torch.linalg.solve_triangular(l_zz, grad_w, upper=False)
        grad_k = None
        if ctx.needs_input_grad[0]:
            t = torch.mm(v, b.T).neg_().tril_()
            psi = t.add_(t.tril(-1).T).mul_(0.5)
            grad_k = torch.linalg.solve_triangular(l_zz.T, psi, upper=True)
            grad_k = torch.linalg.solve_triangular(l_zz, grad_k, upper=False, left=False)
        return grad_k, b, None


class DustGP(torch.nn.Module):
    """Sparse variational GP over phi = log10(extinction density / (mag/pc)).

    Parameters
    ----------
    inducing_points : torch.Tensor, shape (M, 3)
        Initial inducing locations, heliocentric Cartesian, pc.
    mean : float
        Initial constant mean c, log10(mag/pc).
    scale : float
        Initial kernel scale factor alpha, dex² (the prior variance of phi).
    length_scale : float or tuple of 3 floats
        Initial scale lengths (gamma_x, gamma_y, gamma_z), pc.
    learn_inducing_locations : bool
        Train the inducing locations (default) or keep them fixed.
    length_unit : float
        Internal unit of length, pc (default: the mean initial scale length).

    Attributes
    ----------
    inducing_points : torch.Tensor, shape (M, 3)
        Inducing locations z in internal units (pc / ``length_unit``); a parameter when learned, else a buffer.
    variational_mean : torch.nn.Parameter, shape (M,)
        Mean m of q(v), whitened (dimensionless).
    variational_lower : torch.nn.Parameter, shape (M (M - 1) / 2,)
        Strict lower triangle of L_q, row by row (``torch.tril_indices(M, M, -1)`` order).
    variational_log_diag : torch.nn.Parameter, shape (M,)
        ``log diag(L_q)``.
    mean_module : gpytorch.means.ConstantMean
        The constant mean c, log10(mag/pc).
    covar_module : gpytorch.kernels.ScaleKernel
        alpha (dex²) times an ARD RBF kernel of scale lengths gamma (internal units).
    length_unit : torch.Tensor
        Internal unit of length, pc (a buffer).
    """

    def __init__(
        self,
        inducing_points: torch.Tensor,
        *,
        mean: float,
        scale: float = 0.5,
        length_scale: float | tuple[float, float, float] = 20.0,
        learn_inducing_locations: bool = True,
        length_unit: float | None = None,
    ) -> None:
        super().__init__()
        gammas = torch.as_tensor(length_scale, dtype=inducing_points.dtype).expand(3).clone()
        unit = float(gammas.mean()) if length_unit is None else float(length_unit)
        z = (inducing_points / unit).clone()
        m_size = z.shape[0]
        if learn_inducing_locations:
            self.inducing_points = torch.nn.Parameter(z)
        else:
            self.register_buffer("inducing_points", z)
        # q(v) = N(m, L_q L_qᵀ), starting at the prior N(0, I); only the entries of L_q that are used are parameters
        self.variational_mean = torch.nn.Parameter(torch.zeros(m_size, dtype=z.dtype))
        self.variational_lower = torch.nn.Parameter(torch.zeros(m_size * (m_size - 1) // 2, dtype=z.dtype))
        self.variational_log_diag = torch.nn.Parameter(torch.zeros(m_size, dtype=z.dtype))
        self.register_buffer("_lower_index", torch.tril_indices(m_size, m_size, -1), persistent=False)
        # q(v)'s covariance factor from the stars' marginal likelihood, once a newton fit has ended; empty until then
        # (dustgp.fitting.missing_information). Prediction draws with it; training and resuming use L_q.
        self.register_buffer("marginal_scale_tril", torch.zeros(0, 0, dtype=z.dtype))
        self.mean_module = gpytorch.means.ConstantMean()
        self.covar_module = gpytorch.kernels.ScaleKernel(gpytorch.kernels.RBFKernel(ard_num_dims=3))
        self.register_buffer("length_unit", torch.tensor(unit, dtype=inducing_points.dtype))
        self.mean_module.constant.data.fill_(mean)
        self.covar_module.outputscale = scale
        self.covar_module.base_kernel.lengthscale = gammas / unit
        self.to(inducing_points.dtype)

    def forward(self, x: torch.Tensor) -> gpytorch.distributions.MultivariateNormal:
        """The prior of phi at positions ``x`` (internal units, shape (n, 3)): mean c, covariance K_xx, dex²."""
        return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))

    # ----- the parameters and their roles ---------------------------------------------------------------------
    def parameter_groups(self) -> dict[str, list[str]]:
        """Names (as in :meth:`named_parameters`) of the trained parameters, by role.

        Returns
        -------
        dict
            ``"variational_mean"`` (m), ``"variational_lower"`` (the off-diagonal of L_q),
            ``"variational_log_diag"`` (log diag(L_q)), ``"hyperparameters"`` (c, alpha, gamma, through
            GPyTorch's raw parameters) and ``"inducing_points"`` (empty when the locations are fixed). Every
            parameter of the model is in exactly one group.
        """
        names = {id(p): name for name, p in self.named_parameters()}
        hyper = (
            self.mean_module.raw_constant,
            self.covar_module.raw_outputscale,
            self.covar_module.base_kernel.raw_lengthscale,
        )
        z = self.inducing_points
        return {
            "variational_mean": [names[id(self.variational_mean)]],
            "variational_lower": [names[id(self.variational_lower)]],
            "variational_log_diag": [names[id(self.variational_log_diag)]],
            "hyperparameters": [names[id(p)] for p in hyper],
            "inducing_points": [names[id(z)]] if isinstance(z, torch.nn.Parameter) else [],
        }

    def variational_scale_tril(self) -> torch.Tensor:
        """L_q, shape (M, M): ``variational_lower`` below the diagonal, ``exp(variational_log_diag)`` on it.

        The diagonal is learned in log space: Adam then moves each posterior scale by a factor of about
        ``1 ± lr`` per step, so the M scales can follow the full learning rate, while the M(M-1)/2 off-diagonal
        entries keep the small one (see :class:`dustgp.fitting.FitConfig`).
        """
        tril = torch.diag_embed(self.variational_log_diag.exp())
        return tril.index_put(tuple(self._lower_index), self.variational_lower)

    @torch.no_grad()
    def set_variational(self, mean: torch.Tensor, scale_tril: torch.Tensor) -> None:
        """Set q(v) to ``N(mean, scale_tril scale_trilᵀ)``; ``scale_tril`` is lower triangular with a positive
        diagonal, shape (M, M) (its upper triangle is not read). A marginal factor set for the old q is dropped."""
        self.variational_mean.copy_(mean)
        self.variational_lower.copy_(scale_tril[tuple(self._lower_index)])
        self.variational_log_diag.copy_(scale_tril.diagonal().log())
        self.set_marginal(None)

    @torch.no_grad()
    def set_marginal(self, scale_tril: torch.Tensor | None) -> None:
        """Set (None: clear) the factor of q(v)'s covariance from the stars' marginal likelihood, (M, M)."""
        empty = torch.zeros(0, 0, dtype=self.variational_mean.dtype, device=self.variational_mean.device)
        self.marginal_scale_tril = empty if scale_tril is None else scale_tril.to(empty).clone()

    def posterior_scale_tril(self) -> torch.Tensor:
        """The factor prediction draws v with: the marginal one when a newton fit has set it, else L_q."""
        marginal = self.marginal_scale_tril
        return marginal if marginal.numel() else self.variational_scale_tril()

    def cross_covariance(self, x: torch.Tensor) -> torch.Tensor:
        """K_xz for positions ``x`` in internal units, shape (n, M), as a dense tensor."""
        gamma = self.covar_module.base_kernel.lengthscale.reshape(3)
        return rbf_cross_covariance(x, self.inducing_points, gamma, self.covar_module.outputscale)

    def _jittered_k_zz(self) -> tuple[torch.Tensor, float]:
        z = self.inducing_points
        jitter = JITTER.get(z.dtype, 1e-6) * float(self.covar_module.outputscale.detach())
        k_zz = self.cross_covariance(z) + jitter * torch.eye(z.shape[0], dtype=z.dtype, device=z.device)
        return k_zz, jitter

    def inducing_cholesky(self) -> torch.Tensor:
        """Cholesky factor L_zz of K_zz + jitter·alpha·I."""
        return psd_cholesky(*self._jittered_k_zz())

    def projection(self, v: torch.Tensor, l_zz: torch.Tensor) -> torch.Tensor:
        """``L_zz⁻ᵀ vᵀ``: whitened inducing values (S, M) mapped to weights (M, S) on K_xz."""
        return torch.linalg.solve_triangular(l_zz.T, v.T, upper=True)

    def whitened_weights(self, v: torch.Tensor) -> torch.Tensor:
        """``L_zz⁻ᵀ vᵀ`` as :meth:`projection` of :meth:`inducing_cholesky`, with a backward made for training.

        Same values; the gradient with respect to K_zz skips the M × M product of the generic Cholesky
        backward, because here ``L_zzᵀ ∂ℓ/∂L_zz`` is the rank-S matrix ``-vᵀ Bᵀ`` (see
        :class:`_WhitenedProjection`); the time saved is in the docs (Design notes, "Projection").
        """
        k_zz, jitter = self._jittered_k_zz()
        return _WhitenedProjection.apply(k_zz, v.T, jitter)

    def phi(self, x: torch.Tensor, weights: torch.Tensor, workspace: Workspace | None = None) -> torch.Tensor:
        """phi = c + K_xz weights at positions ``x`` (internal units), shape (S, n).

        The product goes through :func:`dustgp.projection.rbf_project`, which never materialises K_xz with its
        autograd graph: the hot loop of training, ~8× faster than plain autograd (benchmarks/bench_kernel.py).
        A training loop passes the same ``workspace`` at every iteration so its n × M scratch memory is reused.
        """
        gamma = self.covar_module.base_kernel.lengthscale.reshape(3)
        projected = rbf_project(
            x, self.inducing_points, gamma, self.covar_module.outputscale, weights, workspace=workspace
        )
        return self.mean_module.constant + projected.T

    def conditional_variance(self, k_xz: torch.Tensor, l_zz_inverse: torch.Tensor) -> torch.Tensor:
        """``diag(K_xx - K_xz K_zz⁻¹ K_zx)`` from a cross-covariance block ``k_xz`` (n, M), dex², shape (n,).

        ``l_zz_inverse`` is ``L_zz⁻¹`` (M, M), formed once per prediction: a matrix product over each block of
        cells is faster than a triangular solve.
        """
        a = l_zz_inverse @ k_xz.T
        return (self.covar_module.outputscale - (a * a).sum(0)).clamp(min=0.0)

    def sample_whitened(self, n_samples: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """Joint draws ``v = m + L ε`` from q(v), shape (n_samples, M), L :meth:`posterior_scale_tril`."""
        m = self.variational_mean
        eps = torch.randn(n_samples, m.shape[0], dtype=m.dtype, device=m.device, generator=generator)
        return m + eps @ self.posterior_scale_tril().T

    # ----- reporting ------------------------------------------------------------------------------------------
    def hyperparameters(self) -> dict[str, float | list[float]]:
        """The five hyperparameters in physical units.

        Returns
        -------
        dict
            ``length_scale_pc`` (gamma_x, gamma_y, gamma_z in pc), ``scale_dex2`` (alpha, dex²),
            ``scale_dex`` (sqrt(alpha), dex: the prior standard deviation of phi), ``mean_log10_density``
            (c, log10 of mag/pc) and ``mean_density`` (10**c, mag/pc).
        """
        with torch.no_grad():
            gamma = (self.covar_module.base_kernel.lengthscale.reshape(3) * self.length_unit).tolist()
            alpha = float(self.covar_module.outputscale.detach())
            c = float(self.mean_module.constant)
        return {
            "length_scale_pc": gamma,
            "scale_dex2": alpha,
            "scale_dex": math.sqrt(alpha),
            "mean_log10_density": c,
            "mean_density": 10.0**c,
        }

    def inducing_points_pc(self) -> torch.Tensor:
        """Inducing locations in pc, shape (M, 3)."""
        return (self.inducing_points * self.length_unit).detach()
