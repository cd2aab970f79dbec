"""Fused RBF cross-covariance projection, the hot loop of training.

Training evaluates, once per iteration, ``K_xz @ weights`` for all n cells and M inducing points with the ARD
squared-exponential kernel of the prior (docs: Method §3):

.. math::

    (K_{xz})_{ij} = \\alpha \\exp\\Big(-\\tfrac12 \\sum_{k=1}^{3}
    \\frac{(x_{ik} - z_{jk})^2}{\\gamma_k^2}\\Big)

Through plain autograd this costs a dozen passes over n × M memory (the graph stores the squared distances,
the clamp mask, the exponential and the scaled kernel, then reads them all back). :func:`rbf_project` is a
custom :class:`torch.autograd.Function` that touches n × M memory as few times as the algebra allows:

* forward: one GEMM writes ``-sq/2`` directly (the squared norms ride along as two extra columns of the
  operands), then in-place ``clamp_`` and ``exp_`` give ``E = exp(-sq/2)``, then ``E @ weights``;
* backward: ``Eᵀ G``, ``G weightsᵀ``, one in-place product with E, and a single GEMM ``[x, x², 1]ᵀ P`` from
  which the gradients of z and gamma follow in closed form (see :func:`rbf_project`);
* alpha's gradient needs no n × M pass at all: ``Σ G ⊙ (E W)``, and ``E W`` is the forward's own output.

E is stored between forward and backward when it fits in :data:`STORE_LIMIT_BYTES`; above that (or on request)
it is recomputed block by block in the backward, so the memory in use is a few row blocks whatever n is
(block size: :data:`BLOCK_BYTES`, or ``chunk_size``).

Everything is plain tensor algebra (``mm``, ``addmm_``, ``exp_``), so it runs unchanged on CUDA, in float32
and float64. On CUDA, keep ``torch.backends.cuda.matmul.allow_tf32`` off (PyTorch's default): the distance
GEMM subtracts squared norms and loses all precision at TF32's 10-bit mantissa.
"""

from __future__ import annotations

import math

import torch
from torch.autograd.function import FunctionCtx, once_differentiable

__all__ = [
    "BLOCK_BYTES",
    "STORE_LIMIT_BYTES",
    "Workspace",
    "rbf_along_sightlines",
    "rbf_apply",
    "rbf_apply_mixed",
    "rbf_cross_covariance",
    "rbf_cross_covariance_vjp",
    "rbf_project",
]

#: Largest n × M matrix E (bytes) that :func:`rbf_project` keeps between forward and backward by default; a
#: larger one is recomputed block by block in the backward instead (one extra GEMM + exp per block), so that
#: memory stays bounded whatever n is.
STORE_LIMIT_BYTES = 512 * 2**20

#: Size (bytes) of one row block of the n × M temporaries when ``chunk_size`` is not given (4096 rows at
#: M = 1000 in float32). A compromise measured with 2 threads, n = 14,800, M = 1000 (plain autograd: 0.5 s
#: on an idle CPU, 1.5 s next to a running training job):
#:
#: =====================================  ============  ========================
#: blocks                                 idle CPU      next to a training job
#: =====================================  ============  ========================
#: 4 MiB, E recomputed in the backward    55-65 ms      1.8 s
#: 16 MiB (default), E stored             60-80 ms      0.5 s
#: one block of 59 MB, E stored           85-100 ms     0.3 s
#: =====================================  ============  ========================
#:
#: Small blocks stay in cache between the GEMM that writes them and the ones that read them, and their buffers
#: are reused rather than page-faulted in afresh. But every block costs about ten BLAS/ATen calls, each an
#: OpenMP barrier, and when another multi-threaded process shares the cores a barrier can wait a whole
#: scheduler slice (~10 ms). Training passes a :class:`Workspace`, which removes the page faults of the stored
#: E (benchmarks/bench_kernel.py, "+ workspace": 74 ms against 100 ms for the default at this size).
BLOCK_BYTES = 16 * 2**20


class Workspace:
    """Scratch buffers that :func:`rbf_project` reuses from one call to the next (one training loop owns one).

    Why: an allocation of more than a few MiB is mapped afresh from the operating system and handed back on
    free, so a new n × M buffer every iteration pays a page fault per 4 KiB on first write. Measured with 2
    threads at n = 14,800, M = 1000, float32: the distance GEMM took 30 ms into a fresh buffer and 8 ms into a
    reused one, 23 ms of a 150 ms training iteration.

    A buffer is taken out while in use and given back after the backward, so two forward passes before one
    backward (or a forward whose graph is dropped) get separate memory rather than overwriting each other.
    """

    def __init__(self) -> None:
        self._free: dict[tuple, torch.Tensor] = {}

    def take(self, rows: int, cols: int, like: torch.Tensor) -> torch.Tensor:
        """An uninitialised (rows, cols) tensor of ``like``'s dtype and device, reused when one is free."""
        buffer = self._free.pop((rows, cols, like.dtype, like.device), None)
        return like.new_empty(rows, cols) if buffer is None else buffer

    def give_back(self, buffer: torch.Tensor | None) -> None:
        """Return a buffer from :meth:`take` for later calls; its contents are no longer needed."""
        if buffer is not None:
            self._free[(*buffer.shape, buffer.dtype, buffer.device)] = buffer


def _scaled(x: torch.Tensor, z: torch.Tensor, gamma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Coordinates divided by gamma and shifted to the centroid of the inducing points.

    Squared distances are invariant under a common shift, and expanding ``|a - b|² = |a|² + |b|² - 2 a·b``
    loses ``eps · |a|²`` in absolute terms: centring keeps |a|² of the order of the extent of the data
    rather than of its distance from the origin. The shift is a constant (no gradient flows through it): the
    function is exactly invariant to it, so the analytic gradients below need no correction term.
    """
    xs, zs = x / gamma, z / gamma
    shift = zs.mean(0).detach()
    return xs - shift, zs - shift


def _augmented(xs: torch.Tensor, zs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Operands (n, 5) and (M, 5) whose product is ``-sq/2``: ``[xs, -|xs|²/2, 1] · [zs, 1, -|zs|²/2]``.

    Folding the norms into the GEMM means one write of the n × M result instead of a broadcast add (a copy of
    the bias into the output) followed by an accumulating GEMM (a read and a write).
    """
    ones_x = torch.ones_like(xs[:, :1])
    ones_z = torch.ones_like(zs[:, :1])
    xa = torch.cat([xs, -0.5 * (xs * xs).sum(1, keepdim=True), ones_x], dim=1)
    za = torch.cat([zs, ones_z, -0.5 * (zs * zs).sum(1, keepdim=True)], dim=1)
    return xa, za


def _exp_floor(dtype: torch.dtype) -> float:
    """Lowest exponent whose exp is still a normal number of ``dtype`` (-86 in float32, -707 in float64)."""
    return float(math.ceil(math.log(torch.finfo(dtype).tiny)) + 1)


def _exp_block(xa: torch.Tensor, za: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``out = exp(clamp(-sq/2, floor, 0))`` for one row block, in place (rows of xa × rows of za).

    The upper clamp: -sq/2 > 0 only through rounding of the expanded form (coincident points); clamping keeps
    E ≤ 1 and K_zz positive semi-definite. The lower clamp: exp that *returns a subnormal* is ~40x slower on
    x86 CPUs (measured: 0.9 s instead of 24 ms for 14.8M float32 entries), and in a map many scale lengths
    wide a tenth of all pairs fall in that band. Flooring E at the smallest normal number (1e-38 in float32,
    instead of 0 or a subnormal) changes K by less than alpha·1e-37 and costs nothing: it is the same clamp.
    """
    torch.mm(xa, za.T, out=out)
    return out.clamp_(min=_exp_floor(out.dtype), max=0.0).exp_()


def _rows_per_block(n: int, m: int, like: torch.Tensor, chunk_size: int | None) -> int:
    if chunk_size is not None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive number of rows, got {chunk_size}")
        return min(chunk_size, max(n, 1))
    return max(1, min(n, BLOCK_BYTES // max(1, m * like.element_size())))


def _exp_matmul(xa: torch.Tensor, za: torch.Tensor, weights: torch.Tensor, block: int, e: torch.Tensor) -> torch.Tensor:
    """``exp(-sq/2) @ weights`` row block by row block; ``e`` holds E for all rows (kept) or one block (reused)."""
    n = xa.shape[0]
    ew = weights.new_empty(n, weights.shape[1])
    whole = e.shape[0] >= n
    for lo in range(0, n, block):
        hi = min(lo + block, n)
        e_block = e[lo:hi] if whole else e[: hi - lo]
        _exp_block(xa[lo:hi], za, e_block)
        torch.mm(e_block, weights, out=ew[lo:hi])
    return ew


def rbf_apply(x: torch.Tensor, z: torch.Tensor, gamma: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``exp(-sq/2) @ weights``, the RBF cross-covariance *without* its scale factor applied to weights, no gradient.

    For prediction, which folds alpha (and any other constant factor) into the weights, an (M, S) matrix,
    rather than scaling the (n, S) result: one pass over the output fewer. Row blocks of about
    :data:`BLOCK_BYTES`, as :func:`rbf_project`.

    Parameters
    ----------
    x : torch.Tensor, shape (n, 3)
    z : torch.Tensor, shape (M, 3)
    gamma : torch.Tensor, shape (3,)
        Positions, inducing locations and scale lengths, in one length unit.
    weights : torch.Tensor, shape (M, S)

    Returns
    -------
    torch.Tensor, shape (n, S)
    """
    with torch.no_grad():
        xa, za = _augmented(*_scaled(x, z, gamma.reshape(3)))
        block = _rows_per_block(x.shape[0], z.shape[0], x, None)
        return _exp_matmul(xa, za, weights, block, x.new_empty(min(block, x.shape[0]), z.shape[0]))


def rbf_apply_mixed(
    x: torch.Tensor, z: torch.Tensor, gamma: torch.Tensor, mean_weights: torch.Tensor, weights: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``exp(-sq/2) @ mean_weights`` in float64 and ``exp(-sq/2) @ weights`` in float32, from one kernel.

    For prediction: the posterior mean's weights (M,) and each draw's deviation from them (M, S). ``K_xz W``
    cancels weights of up to ~cond(L_zz) down to phi - c of ~0.1 dex, so the mean needs float64; the deviations,
    the n × M × S bulk, take the same entries rounded to float32: noise independent from draw to draw, which moved
    the percentiles of 200 draws by at most 0.56 of their Monte Carlo error on the Section 3 fit (docs: Design
    notes, "Projection"). Positions, locations and gamma in one length unit; x and z float64.

    Returns
    -------
    mean : torch.Tensor, shape (n,), float64
    deviations : torch.Tensor, shape (n, S), float32
        Their sum is the draws' projection (the caller adds the mean in a pass it makes anyway).
    """
    with torch.no_grad():
        xa, za = _augmented(*_scaled(x, z, gamma.reshape(3)))
        n, m = x.shape[0], z.shape[0]
        block = _rows_per_block(n, m, x, None)
        e, e32 = x.new_empty(min(block, n), m), weights.new_empty(min(block, n), m)
        mean, out = x.new_empty(n), weights.new_empty(n, weights.shape[1])
        for lo in range(0, n, block):
            hi = min(lo + block, n)
            e_block, e32_block = e[: hi - lo], e32[: hi - lo]
            _exp_block(xa[lo:hi], za, e_block)
            torch.mv(e_block, mean_weights, out=mean[lo:hi])
            e32_block.copy_(e_block)
            torch.mm(e32_block, weights, out=out[lo:hi])
        return mean, out


class _RBFProject(torch.autograd.Function):
    """``alpha · exp(-sq/2) @ weights`` with a hand-written backward; see :func:`rbf_project`."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: FunctionCtx,
        x: torch.Tensor,
        z: torch.Tensor,
        gamma: torch.Tensor,
        alpha: torch.Tensor,
        weights: torch.Tensor,
        chunk_size: int | None,
        recompute: bool | None,
        workspace: Workspace,
    ) -> torch.Tensor:
        n, m = x.shape[0], z.shape[0]
        needs = ctx.needs_input_grad  # type: ignore[attr-defined]
        block = _rows_per_block(n, m, x, chunk_size)
        # The backward needs E for the gradient of weights and for P (z, gamma, x); alpha needs only E W.
        need_e = any(needs[i] for i in (0, 1, 2, 4))
        if recompute is None:
            recompute = n * m * x.element_size() > STORE_LIMIT_BYTES
        store = need_e and not recompute

        xs, zs = _scaled(x, z, gamma)
        xa, za = _augmented(xs, zs)
        e_all = workspace.take(n, m, x) if store else None
        buf = None if store else workspace.take(min(block, n), m, x)
        ew = _exp_matmul(xa, za, weights, block, e_all if store else buf)
        workspace.give_back(buf)

        # xa and za (n × 5, M × 5) are kept rather than recomputed: on a busy machine every small op is an
        # OpenMP barrier that can cost a scheduler time slice, so the backward should start straight on n × M.
        ctx.save_for_backward(xa, za, gamma, alpha, weights, ew, e_all)
        ctx.block = block  # type: ignore[attr-defined]
        ctx.workspace = workspace  # type: ignore[attr-defined]
        return ew * alpha

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad_out: torch.Tensor):  # type: ignore[override]
        xa, za, gamma, alpha, weights, ew, e_all = ctx.saved_tensors  # type: ignore[attr-defined]
        need_x, need_z, need_gamma, need_alpha, need_w = ctx.needs_input_grad[:5]  # type: ignore[attr-defined]
        grad_x = grad_z = grad_gamma = grad_alpha = grad_w = None
        g = grad_out.contiguous()
        n, m = xa.shape[0], za.shape[0]

        if need_alpha:
            # Σ_ij (G Wᵀ)_ij E_ij = Σ_is G_is (E W)_is: no pass over n × M.
            grad_alpha = (g * ew).sum()
        need_p = need_x or need_z or need_gamma
        if not (need_p or need_w):
            return grad_x, grad_z, grad_gamma, grad_alpha, grad_w, None, None, None

        xs, zs = xa[:, :3], za[:, :3]
        block, workspace = ctx.block, ctx.workspace  # type: ignore[attr-defined]
        rows = min(block, n)
        e_buf = workspace.take(rows, m, xa) if e_all is None else None
        p_buf = workspace.take(rows, m, xa) if need_p else None
        gw = weights.new_zeros(m, weights.shape[1]) if need_w else None
        if need_z or need_gamma:
            # Bᵀ P with B = [xs, xs², 1] (n, 7): rows 0-2 are (Pᵀ xs)ᵀ, rows 3-5 sum to Σ_i r_i xs_i², row 6
            # is the column sums of P. One skinny GEMM reads P once for z and gamma together. It is written as
            # (7, n) @ (n, M) because BLAS streams P row-major that way (Pᵀ @ B is ~2-3x slower on MKL);
            # Bᵀ stays a transposed view, which BLAS takes as a flag, not a copy.
            b = torch.cat([xs, xs * xs, xa[:, 4:]], dim=1)  # xa[:, 4] is the column of ones
            acc = xa.new_zeros(7, m)
        if need_x:
            # P [zs, 1] (n, 4): Σ_j P_ij zs_j and the row sums r_i (za[:, 3] is the column of ones).
            z1 = za[:, :4]
            px = xa.new_empty(n, 4)

        for lo in range(0, n, rows):
            hi = min(lo + rows, n)
            e = e_all[lo:hi] if e_all is not None else _exp_block(xa[lo:hi], za, e_buf[: hi - lo])
            g_blk = g[lo:hi]
            if gw is not None:
                gw.addmm_(e.T, g_blk)
            if p_buf is not None:
                # P = (G Wᵀ) ⊙ E: dL/dE scaled by 1/alpha, times dE/d(-sq/2) = E.
                p = torch.mm(g_blk, weights.T, out=p_buf[: hi - lo]).mul_(e)
                if need_z or need_gamma:
                    acc.addmm_(b[lo:hi].T, p)
                if need_x:
                    torch.mm(p, z1, out=px[lo:hi])

        for buffer in (e_all, e_buf, p_buf):
            workspace.give_back(buffer)
        if gw is not None:
            grad_w = gw.mul_(alpha)
        scale = alpha / gamma  # (3,)
        if need_z or need_gamma:
            a = acc[:3].T  # (M, 3): Σ_i P_ij xs_ik
            colsum = acc[6]  # (M,)
            if need_z:
                # dL/dz_jk = α/γ_k Σ_i P_ij (xs_ik - zs_jk)
                grad_z = scale * (a - zs * colsum[:, None])
            if need_gamma:
                # dL/dγ_k = α/γ_k Σ_ij P_ij (xs_ik - zs_jk)², expanded into the three sums.
                grad_gamma = scale * (acc[3:6].sum(1) - 2.0 * (zs * a).sum(0) + (colsum[:, None] * zs * zs).sum(0))
        if need_x:
            # dL/dx_ik = -α/γ_k Σ_j P_ij (xs_ik - zs_jk)
            grad_x = -scale * (xs * px[:, 3:] - px[:, :3])
        return grad_x, grad_z, grad_gamma, grad_alpha, grad_w, None, None, None


def rbf_project(
    x: torch.Tensor,
    z: torch.Tensor,
    gamma: torch.Tensor,
    alpha: torch.Tensor,
    weights: torch.Tensor,
    *,
    chunk_size: int | None = None,
    recompute: bool | None = None,
    workspace: Workspace | None = None,
) -> torch.Tensor:
    """``K_xz @ weights`` for the ARD RBF kernel, with a fused, memory-lean forward and backward.

    .. math::

        \\mathrm{out}_{is} = \\alpha \\sum_{j=1}^{M} \\exp\\Big(-\\tfrac12 \\sum_{k=1}^{3}
        \\frac{(x_{ik} - z_{jk})^2}{\\gamma_k^2}\\Big) w_{js}

    With ``E = exp(-sq/2)`` (n × M), ``G = ∂L/∂out`` and ``P = (G wᵀ) ⊙ E``, the backward is

    .. math::

        \\frac{\\partial L}{\\partial w} = \\alpha E^\\top G, \\quad
        \\frac{\\partial L}{\\partial \\alpha} = \\sum_{is} G_{is} (E w)_{is}, \\quad
        \\frac{\\partial L}{\\partial z_{jk}} = \\frac{\\alpha}{\\gamma_k} \\sum_i P_{ij}
        (\\hat x_{ik} - \\hat z_{jk}), \\quad
        \\frac{\\partial L}{\\partial \\gamma_k} = \\frac{\\alpha}{\\gamma_k} \\sum_{ij} P_{ij}
        (\\hat x_{ik} - \\hat z_{jk})^2

    with ``x̂ = x/γ``, ``ẑ = z/γ``; the sums over i are matrix products with ``[x̂, x̂², 1]``. The gradient of x
    (``-α/γ_k Σ_j P_ij (x̂_ik - ẑ_jk)``) is computed only when x requires it.

    Parameters
    ----------
    x : torch.Tensor, shape (n, 3)
        Positions (internal units). Normally fixed data; its gradient is computed only if it requires one.
    z : torch.Tensor, shape (M, 3)
        Inducing locations, same units.
    gamma : torch.Tensor, shape (3,) or (1, 3)
        Length scales gamma_k, same units, positive.
    alpha : torch.Tensor, shape () or (1,)
        Kernel scale factor (prior variance), positive.
    weights : torch.Tensor, shape (M, S) or (M,)
        Weights on the columns of K_xz, e.g. ``L_zz⁻ᵀ v`` for S whitened samples v.
    chunk_size : int, optional
        Rows of x per block. The result does not depend on it (up to rounding of block-wise sums). Default:
        blocks of about :data:`BLOCK_BYTES`. On a CPU with no other load, ``chunk_size=1000, recompute=True``
        (4 MiB blocks at M = 1000) is ~15 % faster; with other processes on the cores it is several times
        slower, and one block for all of x (``chunk_size=n``) is the most robust (see :data:`BLOCK_BYTES`).
    recompute : bool, optional
        Recompute E block by block in the backward instead of storing it (n × M elements) from the forward.
        Default: recompute when the n × M matrix would exceed :data:`STORE_LIMIT_BYTES`.
    workspace : Workspace, optional
        Scratch memory reused across calls (pass the same one on every iteration of a training loop); by
        default a fresh one, freed with the autograd graph.

    Returns
    -------
    torch.Tensor, shape (n, S) or (n,)
        ``K_xz @ weights``, differentiable with respect to x, z, gamma, alpha and weights (first order only).

    Notes
    -----
    All tensors must share one dtype (float32 or float64) and device. The clamp of ``sq`` at zero (rounding of
    the expanded distance at coincident points) is not differentiated: where it acts, ``x̂_i - ẑ_j`` is zero to
    rounding and so are the gradient terms.
    """
    if x.ndim != 2 or x.shape[1] != 3 or z.ndim != 2 or z.shape[1] != 3:
        raise ValueError(f"x and z must have shape (n, 3) and (M, 3), got {tuple(x.shape)}, {tuple(z.shape)}")
    vector = weights.ndim == 1
    w = weights[:, None] if vector else weights
    if w.shape[0] != z.shape[0]:
        raise ValueError(f"weights has {w.shape[0]} rows for {z.shape[0]} inducing points")
    if not torch.is_grad_enabled():
        recompute = True  # no backward will come: never keep E
    # Reshapes are views, so autograd maps the gradients back onto the callers' shapes.
    workspace = Workspace() if workspace is None else workspace
    out = _RBFProject.apply(x, z, gamma.reshape(3), alpha.reshape(()), w, chunk_size, recompute, workspace)
    return out[:, 0] if vector else out


def rbf_cross_covariance(x: torch.Tensor, z: torch.Tensor, gamma: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """The dense cross-covariance K_xz, with as few passes as autograd allows.

    .. math::

        (K_{xz})_{ij} = \\alpha \\exp\\Big(-\\tfrac12 \\sum_{k=1}^{3} (x_{ik} - z_{jk})^2 / \\gamma_k^2\\Big)

    Parameters
    ----------
    x : torch.Tensor, shape (n, 3)
        Positions (internal units).
    z : torch.Tensor, shape (M, 3)
        Inducing locations, same units.
    gamma : torch.Tensor, shape (3,) or (1, 3)
        Length scales, same units.
    alpha : torch.Tensor, shape () or (1,)
        Kernel scale factor.

    Returns
    -------
    torch.Tensor, shape (n, M)
        K_xz. In place (one GEMM, clamp, exp and scale over n × M) when no gradient is being recorded;
        through ordinary autograd otherwise (use :func:`rbf_project` for the projection in training).
    """
    xs, zs = _scaled(x, z, gamma.reshape(3))
    xa, za = _augmented(xs, zs)
    alpha = alpha.reshape(())
    if torch.is_grad_enabled() and any(t.requires_grad for t in (x, z, gamma, alpha)):
        return alpha * torch.exp((xa @ za.T).clamp(min=_exp_floor(x.dtype), max=0.0))
    k = x.new_empty(x.shape[0], z.shape[0])
    return _exp_block(xa, za, k).mul_(alpha)


def rbf_along_sightlines(
    distance: torch.Tensor, direction: torch.Tensor, gamma: torch.Tensor, alpha: torch.Tensor | float
) -> torch.Tensor:
    """The prior covariance between the cells of each sightline, ``(n_sightlines, n_d, n_d)``, dex².

    Cells of one sightline lie at ``d_j û`` for its unit vector ``û``, so their separations are ``(d_j - d_k) û``
    and the ARD kernel reduces to ``alpha exp(-(d_j - d_k)² Σ_k (û_k/γ_k)² / 2)``: no n × n × 3 array of offsets.

    Parameters
    ----------
    distance : torch.Tensor, shape (n_sightlines, n_d) or (n_d,)
        Distances of the cells along each sightline, in the units of ``gamma``.
    direction : torch.Tensor, shape (n_sightlines, 3)
        Unit vector of each sightline (heliocentric Cartesian).
    gamma : torch.Tensor, shape (3,)
        Scale lengths.
    alpha : torch.Tensor or float
        Kernel scale factor.
    """
    rate = ((direction / gamma.reshape(3)) ** 2).sum(-1)  # (n_sightlines,)
    separation = distance[..., :, None] - distance[..., None, :]
    return alpha * torch.exp(-0.5 * separation**2 * rate[:, None, None])


def rbf_cross_covariance_vjp(
    x: torch.Tensor, z: torch.Tensor, gamma: torch.Tensor, alpha: torch.Tensor, k_xz: torch.Tensor, grad: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of ``Σ grad ⊙ K_xz`` with respect to z, gamma and alpha, given K_xz itself.

    With ``P = grad ⊙ K_xz`` and ``r = P 1``, ``s = Pᵀ 1``:
    ``∂/∂z_jk = ((Pᵀx)_jk - z_jk s_j) / γ_k²``,
    ``∂/∂γ_k = (Σ_i r_i x_ik² - 2 Σ_j z_jk (Pᵀx)_jk + Σ_j s_j z_jk²) / γ_k³`` and ``∂/∂α = Σ P / α``:
    one elementwise pass over n × M and one thin GEMM, where autograd would keep and re-read the whole graph.

    Parameters
    ----------
    x, z, gamma, alpha
        As in :func:`rbf_cross_covariance` (no gradient is recorded).
    k_xz : torch.Tensor, shape (n, M)
        ``rbf_cross_covariance(x, z, gamma, alpha)``.
    grad : torch.Tensor, shape (n, M)
        Gradient of a scalar with respect to K_xz; overwritten (it becomes P).

    Returns
    -------
    grad_z : (M, 3), grad_gamma : (3,), grad_alpha : ()
    """
    gamma = gamma.reshape(3)
    p = grad.mul_(k_xz)
    shift = z.mean(0)  # centring keeps the sums below well conditioned; the result does not depend on it
    xc, zc = x - shift, z - shift
    row, col = p.sum(1), p.sum(0)
    ptx = p.T @ xc  # (M, 3)
    grad_z = (ptx - zc * col[:, None]) / gamma**2
    grad_gamma = ((row @ (xc * xc)) - 2.0 * (zc * ptx).sum(0) + (col @ (zc * zc))) / gamma**3
    grad_alpha = (row.sum() / alpha).reshape(())
    return grad_z, grad_gamma, grad_alpha
