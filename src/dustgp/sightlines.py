"""The sightline operator W (star × cell) and the sufficient statistics of the Gaussian likelihood.

Model extinction to star i (docs: Method §4, paper Eqs. 6-8):

.. math::

    A_{\\mathrm{mod},i} = \\sum_{j < j^*} \\rho_j \\Delta d_j + \\rho_{j^*} (d_i - d_{j^*-1/2})

over the cells j of the star's (l, b) column from the Sun outward (ghost cells first); j* holds the star. In
terms of the fraction ``f_i = (d_i - d_{j*-1/2}) / Δd_{j*}`` of the last cell actually crossed, the row of W is
``Δd_j`` for j < j*, ``f_i Δd_{j*}`` at j* and 0 beyond.

With Gaussian noise of fixed sigma, the log-likelihood of all stars depends on rho only through
``H = Wᵀ Σ⁻¹ W`` and ``g = Wᵀ Σ⁻¹ A``. Every row of W lies in one column, so H is block diagonal with one
``n_d × n_d`` block per column; :class:`GaussianStatistics` holds those blocks and makes the per-iteration cost of
the likelihood independent of the number of stars.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .grid import Grid

__all__ = ["GaussianStatistics", "Sightlines", "cell_extinction_moments", "cumulative_extinction"]

LN10 = math.log(10.0)


def cumulative_extinction(density: torch.Tensor, path_lengths: torch.Tensor, dim: int = -2) -> torch.Tensor:
    """Extinction (mag) to the far edge of every cell.

    Parameters
    ----------
    density : torch.Tensor, shape (..., n_d, n_columns) by default
        Extinction density of each cell, mag/pc, cells ordered from the Sun outward along axis ``dim``.
    path_lengths : torch.Tensor, shape (n_d,)
        Cell lengths along the sightline, pc.
    dim : int
        The distance axis of ``density``.

    Returns
    -------
    torch.Tensor, shape of ``density``
        Integrated extinction from the Sun to each cell's far edge, mag.
    """
    shape = [1] * density.dim()
    shape[dim] = -1
    return torch.cumsum(density * path_lengths.reshape(shape), dim=dim)


@dataclass(frozen=True)
class Sightlines:
    """Where each star's sightline ends on a grid: its column, its cell and the fraction of that cell crossed.

    Build with :meth:`from_positions`; stars off the grid (or in the ghost cells) are excluded and counted.

    Attributes
    ----------
    grid : Grid
    column : numpy.ndarray of int, shape (n_stars,)
        Column (b, l sightline) index of each star.
    cell : numpy.ndarray of int, shape (n_stars,)
        Distance-cell index j* holding each star (counting ghost cells).
    fraction : numpy.ndarray of float, shape (n_stars,)
        Fraction of cell j* between its near edge and the star, in [0, 1].
    star_index : numpy.ndarray of int, shape (n_stars,)
        Index of each kept star in the positions given to :meth:`from_positions`.
    n_off_grid, n_in_ghost_cells : int
        Stars excluded because they lie outside the grid or in front of ``d_min``.
    """

    grid: Grid
    column: np.ndarray
    cell: np.ndarray
    fraction: np.ndarray
    star_index: np.ndarray
    n_off_grid: int = 0
    n_in_ghost_cells: int = 0

    @classmethod
    def from_positions(cls, grid: Grid, l: np.ndarray, b: np.ndarray, d: np.ndarray) -> Sightlines:
        """Locate stars at ``(l, b, d)`` (deg, deg, pc) on ``grid``, vectorised over stars."""
        i_d, i_b, i_l = grid.locate(l, b, d)
        on_grid = i_d >= 0
        in_ghost = on_grid & (i_d < grid.ghost_cells)
        keep = np.flatnonzero(on_grid & ~in_ghost)
        near = grid.d_edges[i_d[keep]]
        fraction = (np.asarray(d, dtype=float)[keep] - near) / grid.path_lengths[i_d[keep]]
        return cls(
            grid=grid,
            column=(i_b[keep] * grid.n_l + i_l[keep]).astype(np.int64),
            cell=i_d[keep].astype(np.int64),
            fraction=np.clip(fraction, 0.0, 1.0),
            star_index=keep,
            n_off_grid=int(np.count_nonzero(~on_grid)),
            n_in_ghost_cells=int(np.count_nonzero(in_ghost)),
        )

    def __len__(self) -> int:
        return self.column.size

    @property
    def cell_index(self) -> np.ndarray:
        """Index of each star's own cell in the grid's flat cell order (``cell * n_columns + column``)."""
        return self.cell * self.grid.n_columns + self.column

    def weights(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The non-zero entries of W as ``(star, flat_cell, weight_pc)`` arrays (COO), built without a loop."""
        n_d = self.grid.n_d
        lengths = self.grid.path_lengths
        counts = self.cell + 1
        star = np.repeat(np.arange(len(self)), counts)
        # position of each entry within its star's run: 0 .. cell
        j = np.arange(star.size) - np.repeat(np.cumsum(counts) - counts, counts)
        weight = lengths[j].copy()
        last = j == self.cell[star]
        weight[last] *= self.fraction[star[last]]
        assert np.all(j < n_d)
        return star, j * self.grid.n_columns + self.column[star], weight

    def matrix(self, *, dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu") -> torch.Tensor:
        """W as a coalesced sparse COO tensor of shape ``(n_stars, n_cells)``, entries in pc."""
        star, cell, weight = self.weights()
        coo = torch.sparse_coo_tensor(
            np.stack([star, cell]),
            weight,
            size=(len(self), self.grid.n_cells),
            dtype=dtype,
            device=device,
            check_invariants=False,  # indices are built in range above; checking costs a pass over them
        )
        return coo.coalesce()

    def extinction(self, density: torch.Tensor) -> torch.Tensor:
        """Model extinction (mag) to every star, for one or many density fields.

        Parameters
        ----------
        density : torch.Tensor, shape (..., n_cells) or (..., n_d, n_b, n_l)
            Extinction density, mag/pc.

        Returns
        -------
        torch.Tensor, shape (..., n_stars)
        """
        grid = self.grid
        rho = density.reshape(
            *density.shape[: density.dim() - (1 if density.shape[-1] == grid.n_cells else 3)],
            grid.n_d,
            grid.n_columns,
        )
        lengths = torch.as_tensor(grid.path_lengths, dtype=rho.dtype, device=rho.device)
        cum = cumulative_extinction(rho, lengths)
        cell = torch.as_tensor(self.cell, device=rho.device)
        column = torch.as_tensor(self.column, device=rho.device)
        before = torch.where(cell > 0, cum[..., (cell - 1).clamp(min=0), column], torch.zeros((), dtype=rho.dtype))
        partial = rho[..., cell, column] * (
            torch.as_tensor(self.fraction, dtype=rho.dtype, device=rho.device) * lengths[cell]
        )
        return before + partial


@dataclass(frozen=True)
class GaussianStatistics:
    """Sufficient statistics of the Gaussian log-likelihood of all stars, per cell.

    .. math::

        \\ln p(A \\mid \\rho) = -\\tfrac12 \\left[\\rho^\\top H \\rho - 2 g^\\top \\rho
        + \\sum_i A_i^2/\\sigma_i^2 + \\sum_i \\ln(2\\pi\\sigma_i^2)\\right]

    with ``H = Wᵀ Σ⁻¹ W`` and ``g = Wᵀ Σ⁻¹ A`` (docs: Design notes). H is block diagonal (one n_d × n_d block per
    sightline column) and every block has the structure of a sightline integral, so H is never stored. A star
    ending in cell J of its column, having crossed a fraction f of it, has model extinction ``C_J + f u_J`` with
    ``u_j = rho_j ℓ_j`` and ``C_J = Σ_{j<J} u_j``; summed over the stars of each cell,

    .. math::

        \\sum_i w_i (A_i - a_i)^2 = \\sum_J \\big[S_0 C_J^2 + 2 S_1 C_J u_J + S_2 u_J^2
        - 2 T_0 C_J - 2 T_1 u_J\\big] + \\sum_i w_i a_i^2,

    with ``S_k = Σ w_i f_i^k`` and ``T_k = Σ w_i f_i^k a_i`` over the stars of cell J and ``w = 1/σ²``. Five
    numbers per cell and one cumulative sum per density field: the likelihood of any number of stars costs
    O(cells) per sample, no more than reading the density once.

    Attributes
    ----------
    moments : torch.Tensor, shape (5, n_d, n_columns)
        S_0 (mag⁻²), S_1 (mag⁻²), S_2 (mag⁻²), T_0 (mag⁻¹), T_1 (mag⁻¹) per cell.
    path_lengths : torch.Tensor, shape (n_d,)
        Length of each distance bin along the sightline, pc.
    constant : float
        ``Σ A²/σ² + Σ ln(2πσ²)``.
    n_stars : int
    """

    moments: torch.Tensor
    path_lengths: torch.Tensor
    constant: float
    n_stars: int

    @classmethod
    def from_stars(
        cls,
        sightlines: Sightlines,
        extinction: np.ndarray,
        sigma: np.ndarray,
        *,
        dtype: torch.dtype = torch.float64,
    ) -> GaussianStatistics:
        """Accumulate the per-cell moments in one pass over the stars (no star loop, no star × cell matrix).

        ``extinction`` and ``sigma`` (mag) are per star of ``sightlines`` (already restricted to kept stars).
        """
        a = np.asarray(extinction, dtype=float)
        w = 1.0 / np.asarray(sigma, dtype=float) ** 2
        constant = float(np.sum(w * a * a) + np.sum(np.log(2.0 * np.pi / w)))
        return cls.from_weights(
            sightlines, torch.tensor(a), torch.tensor(w), constant=constant, n_stars=len(sightlines)
        ).to(dtype=dtype)

    @classmethod
    def from_weights(
        cls, sightlines: Sightlines, extinction: torch.Tensor, weight: torch.Tensor, *, constant: float, n_stars: int
    ) -> GaussianStatistics:
        """The moments of stars with precision weights ``w`` (mag⁻²) and a given ``constant``, on their device.

        Used for weighted node stars (:class:`dustgp.likelihood.StarLikelihood`): several rows per star, each
        weighted by its share of the star's posterior.
        """
        grid = sightlines.grid
        device, dtype = weight.device, weight.dtype
        f = torch.as_tensor(sightlines.fraction, dtype=dtype, device=device)
        bins = torch.as_tensor(sightlines.cell_index, device=device)
        return cls.from_node_weights(grid, bins, f, extinction.to(dtype), weight, constant=constant, n_stars=n_stars)

    @classmethod
    def from_node_weights(
        cls,
        grid: Grid,
        bins: torch.Tensor,
        fraction: torch.Tensor,
        extinction: torch.Tensor,
        weight: torch.Tensor,
        *,
        constant: float,
        n_stars: int,
    ) -> GaussianStatistics:
        """:meth:`from_weights` from each row's flat cell index in grid order (``cell * n_columns + column``) and
        crossed fraction as tensors, for callers that keep them between updates."""
        n_d, n_col = grid.n_d, grid.n_columns
        wf = weight * fraction
        per_star = (weight, wf, wf * fraction, weight * extinction, wf * extinction)  # S_0, S_1, S_2, T_0, T_1
        moments = torch.stack([torch.bincount(bins, weights=v, minlength=n_d * n_col) for v in per_star])
        return cls(
            moments=moments.reshape(5, n_d, n_col),
            path_lengths=torch.as_tensor(grid.path_lengths, dtype=weight.dtype, device=weight.device),
            constant=constant,
            n_stars=n_stars,
        )

    def to(self, *, dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> GaussianStatistics:
        return GaussianStatistics(
            moments=self.moments.to(dtype=dtype, device=device),
            path_lengths=self.path_lengths.to(dtype=dtype, device=device),
            constant=self.constant,
            n_stars=self.n_stars,
        )

    def log_likelihood(self, density: torch.Tensor) -> torch.Tensor:
        """Gaussian log-likelihood of all stars for density fields of shape ``(..., n_d, n_columns)``.

        Returns a tensor of shape ``(...)``. The constant is added in float64 arithmetic outside autograd's
        concern: it carries no gradient, and in float32 it would swamp the data-dependent part.
        """
        u = density * self.path_lengths[:, None]
        before = torch.cumsum(u, dim=-2) - u  # extinction at the near edge of each cell, C_J
        s0, s1, s2, t0, t1 = self.moments
        chi2 = before * (s0 * before + 2.0 * s1 * u - 2.0 * t0) + u * (s2 * u - 2.0 * t1)
        return -0.5 * chi2.sum(dim=(-1, -2)) - 0.5 * self.constant

    def column_blocks(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The quadratic form of the moments written out per sightline column, in ``u_j = rho_j ℓ_j`` (mag).

        ``Σ_i w_i (A_i - a_i)² = Σ_columns [uᵀ H u - 2 tᵀ u] + Σ_i w_i A_i²`` with, inside one column,
        ``H_jk = R_max(j,k) + S1_max(j,k)`` off the diagonal, ``H_jj = R_j + S2_j``, ``R_k = Σ_{J>k} S0_J``,
        and ``t_j = Σ_{J>j} T0_J + T1_j`` (expand ``C_J = Σ_{j<J} u_j`` in the class docstring's sum).

        Returns
        -------
        H : torch.Tensor, shape (n_columns, n_d, n_d)
            Symmetric, non-negative entries, mag⁻².
        t : torch.Tensor, shape (n_columns, n_d)
            mag⁻¹.
        """
        s0, s1, s2, t0, t1 = self.moments.transpose(1, 2)  # each (n_columns, n_d)
        beyond = torch.flip(torch.cumsum(torch.flip(s0, (-1,)), -1), (-1,)) - s0  # R_k = Σ_{J>k} S0_J
        t = torch.flip(torch.cumsum(torch.flip(t0, (-1,)), -1), (-1,)) - t0 + t1
        n_d = s0.shape[-1]
        index = torch.arange(n_d, device=s0.device)
        later = torch.maximum(index[:, None], index[None, :])  # max(j, k)
        h = beyond[:, later] + s1[:, later]
        h.diagonal(dim1=-2, dim2=-1).copy_(beyond + s2)
        return h, t

    def expected_log_likelihood(
        self, mean: torch.Tensor, covariance: torch.Tensor, blocks: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """``E[ln p(A | rho)]`` in closed form when phi = log10(rho) is Gaussian within each sightline column.

        The likelihood is quadratic in rho and rho is log-normal, so its expectation needs only the first two
        moments of ``u_j = rho_j ℓ_j``: ``E[u_j] = ℓ_j exp(ln10 μ_j + ln10² Σ_jj / 2)`` and
        ``E[u_j u_k] = E[u_j] E[u_k] exp(ln10² Σ_jk)``. Stars couple cells of their own column only, so the
        covariance between columns never enters. This is the ELBO's data term without Monte Carlo noise.

        Parameters
        ----------
        mean : torch.Tensor, shape (n_columns, n_d)
            Mean of phi in each cell, log10(mag/pc), columns first.
        covariance : torch.Tensor, shape (n_columns, n_d, n_d)
            Covariance of phi within each column, dex².
        blocks : tuple, optional
            :meth:`column_blocks`, when already at hand.

        Returns
        -------
        torch.Tensor, shape ()
            nats; differentiable in ``mean`` and ``covariance`` (by Price's theorem their gradients are
            ``E[∂ℓ/∂phi]`` and ``½ E[∂²ℓ/∂phi²]``, which the second-order fit uses).
        """
        h, t = self.column_blocks() if blocks is None else blocks
        first, second = _lognormal_moments(mean, covariance, self.path_lengths)
        chi2 = (h * second).sum() - 2.0 * (t * first).sum()
        return -0.5 * chi2 - 0.5 * self.constant


def _lognormal_moments(
    mean: torch.Tensor, covariance: torch.Tensor, path_lengths: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``E[u_j]`` (mag) and ``E[u_j u_k]`` (mag², within each column) of ``u_j = 10^phi_j ℓ_j``, phi Gaussian."""
    log_u = torch.log(path_lengths) + LN10 * mean + (0.5 * LN10**2) * covariance.diagonal(dim1=-2, dim2=-1)
    return torch.exp(log_u), torch.exp(log_u[..., :, None] + log_u[..., None, :] + LN10**2 * covariance)


def cell_extinction_moments(mean: torch.Tensor, covariance: torch.Tensor, path_lengths: torch.Tensor) -> torch.Tensor:
    """Moments of the extinction through each cell when phi is Gaussian within each sightline column.

    With ``u_j = ρ_j ℓ_j`` log-normal and ``C_J = Σ_{j<J} u_j`` the extinction in front of cell J, a star that
    crosses a fraction f of cell J has ``A = C_J + f u_J``, so ``E[A]`` and ``E[A²]`` follow from the five
    moments returned here (prefix sums of the first and second moments of u).

    Parameters
    ----------
    mean : torch.Tensor, shape (n_columns, n_d)
        Mean of phi, log10(mag/pc).
    covariance : torch.Tensor, shape (n_columns, n_d, n_d)
        Covariance of phi within each column, dex².
    path_lengths : torch.Tensor, shape (n_d,)
        pc.

    Returns
    -------
    torch.Tensor, shape (5, n_columns, n_d)
        ``E[C_J]``, ``E[u_J]`` (mag), ``E[C_J²]``, ``E[C_J u_J]``, ``E[u_J²]`` (mag²).
    """
    first, second = _lognormal_moments(mean, covariance, path_lengths)
    front = torch.cumsum(first, -1) - first
    prefix = torch.cumsum(torch.cumsum(second, -1), -2)  # Σ_{j≤a, k≤b}
    diag_prefix = prefix.diagonal(dim1=-2, dim2=-1)
    front_sq = torch.cat([torch.zeros_like(diag_prefix[..., :1]), diag_prefix[..., :-1]], dim=-1)
    column_prefix = torch.cumsum(second, -2) - second  # Σ_{j<a} second[j, b]
    front_u = column_prefix.diagonal(dim1=-2, dim2=-1)
    return torch.stack([front, first, front_sq, front_u, second.diagonal(dim1=-2, dim2=-1)])
