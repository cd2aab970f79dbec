"""Prediction: posterior samples of the density on any grid, and their summaries (METHOD.md §6).

One set of joint draws of the whitened inducing values is made first; every chunk of the prediction grid is then
projected from those same draws, so samples stay joint across chunks while memory stays bounded by the chunk size.
Chunks hold whole sightlines, so each sample is integrated along its sightline within its chunk; percentiles of
extinction are taken over integrated samples, never by integrating percentiles.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm.auto import tqdm

from .dustmap import DEFAULT_PERCENTILES, DustMap
from .grid import Grid
from .kernels import rbf_along_sightlines
from .newton import batched_eigh
from .sightlines import cumulative_extinction

if TYPE_CHECKING:
    from .fitting import Fit

__all__ = ["percentiles_along", "predict"]

logger = logging.getLogger(__name__)

#: Cells per chunk: bounds memory to about chunk × (M + 2 samples) numbers.
DEFAULT_CHUNK_CELLS = 50_000


def percentiles_along(x: torch.Tensor, q: Sequence[float]) -> torch.Tensor:
    """Percentiles (0-100) over axis 0 with linear interpolation (numpy's default), shape ``(len(q), ...)``.

    Sorting once serves every level; ``torch.quantile`` refuses inputs of more than 2²⁴ elements.

    >>> percentiles_along(torch.arange(11.0)[:, None], [16, 50, 84]).ravel().tolist()
    [1.600000023841858, 5.0, 8.399999618530273]
    """
    # sorting along a contiguous last axis is several times faster than along the strided first one
    ordered = x.movedim(0, -1).contiguous().sort(dim=-1).values
    position = torch.as_tensor(q, dtype=x.dtype, device=x.device) / 100.0 * (x.shape[0] - 1)
    lower = position.floor().long().clamp(max=x.shape[0] - 1)
    upper = (lower + 1).clamp(max=x.shape[0] - 1)
    weight = position - lower
    picked = ordered[..., lower] * (1 - weight) + ordered[..., upper] * weight
    return picked.movedim(-1, 0)


#: Sightlines whose conditional covariance is computed, one in ``COVARIANCE_STRIDE`` along l and along b; the
#: others take their nearest computed neighbour's. It varies on the spacing of the inducing points (~15-20 pc at
#: M = 1000 in the paper's Section 3 wedge), while neighbouring sightlines of a prediction grid lie 2-3 pc apart
#: there; computing it costs n M² (a triangular solve per cell), four times less with a stride of 2.
COVARIANCE_STRIDE = 2


def _column_factors(gp: Any, grid: Grid, l_zz: torch.Tensor, stride: int) -> tuple[torch.Tensor, np.ndarray]:
    """Cholesky factors of the conditional covariance ``K_xx - K_xz K_zz⁻¹ K_zx`` within sightlines.

    Returns the factors ``(n_computed, n_d, n_d)`` (float32) of the sightlines at every ``stride``-th l and b, and
    for every column of ``grid`` the index of the factor it uses (its nearest computed sightline).

    ``A = K_xz L_zz⁻ᵀ`` is formed by a triangular solve in float32: the solve is backward stable and the rows of A
    are bounded (``|A_i|² ≤ alpha``), so ``A Aᵀ`` keeps ~1e-7·cond(L_zz) of alpha. The prior within a sightline
    needs no n × n kernel: cells of one sightline differ by ``Δd`` along its unit vector ``û``, so
    ``K_xx = alpha exp(-Δd² Σ_k (û_k/γ_k)² / 2)``. Blocks that rounding makes indefinite get their eigenvalues
    floored at zero.
    """
    dev = l_zz.device
    i_b, i_l = np.arange(0, grid.n_b, stride), np.arange(0, grid.n_l, stride)
    picked = (i_b[:, None] * grid.n_l + i_l[None, :]).ravel()
    nearest_b = np.minimum(np.round(np.arange(grid.n_b) / stride).astype(int), i_b.size - 1)
    nearest_l = np.minimum(np.round(np.arange(grid.n_l) / stride).astype(int), i_l.size - 1)
    index = (nearest_b[:, None] * i_l.size + nearest_l[None, :]).ravel()

    alpha = gp.covar_module.outputscale.detach()
    gamma = (gp.covar_module.base_kernel.lengthscale.detach().reshape(3) * gp.length_unit).to(torch.float64)
    centres = torch.as_tensor(grid.cell_centers_xyz()).reshape(grid.n_d, grid.n_columns, 3)[:, picked]
    x = centres.reshape(-1, 3).to(dev, gp.length_unit.dtype) / gp.length_unit
    k = gp.cross_covariance(x).float()
    a = torch.linalg.solve_triangular(l_zz.float(), k.T, upper=False).T  # (n_d * n_picked, M)
    del k
    a_col = a.view(grid.n_d, picked.size, -1).transpose(0, 1)
    low_rank = torch.bmm(a_col, a_col.transpose(1, 2)).double()
    del a, a_col
    unit = (centres[-1] / centres[-1].norm(dim=-1, keepdim=True)).to(dev)  # (n_picked, 3)
    d = torch.as_tensor(grid.d_centers, dtype=torch.float64, device=dev)
    conditional = rbf_along_sightlines(d, unit, gamma, float(alpha)) - low_rank
    eye = torch.eye(grid.n_d, dtype=conditional.dtype, device=dev)
    factor, info = torch.linalg.cholesky_ex(conditional + 1e-5 * float(alpha) * eye)
    bad = info != 0
    if bool(bad.any()):
        values, vectors = batched_eigh(conditional[bad])
        factor[bad] = vectors * values.clamp(min=0.0).sqrt()[:, None, :]
    return factor.float(), index


def _default_grid(fit: Fit, grid: Grid | None) -> Grid:
    if grid is None:
        grid = fit.grid.refined(2.5)
    needed = _foreground_cells_needed(fit.grid, grid.d_min)
    if grid.ghost_cells < needed:
        grid = grid.with_ghost_cells(needed)
        logger.info("prediction grid: %d foreground ghost cells in front of %g pc", needed, grid.d_min)
    return grid


def _foreground_cells_needed(trained: Grid, d_min: float) -> int:
    """Ghost cells a prediction grid starting at ``d_min`` (pc) needs to reproduce the trained foreground.

    A cell's density is the one at its centre, and the stars constrain the trained cells' sum of density ×
    length. Ghost cells wider than the trained cells they cover evaluate the density elsewhere and lose that
    sum: on the Section 3 experiment (two trained ghost cells, 0-180 pc), one prediction ghost cell gave
    0.259 mag of foreground extinction instead of 0.286, and 14% of stars came out underestimated by more than
    their sigma. With the trained layout (same ``d_min``) the foreground is reproduced exactly; otherwise the
    cells are made no wider than the narrowest trained cell in front of ``d_min``.
    """
    if trained.ghost_cells == 0 or d_min <= 0:
        return 0  # a fit without a foreground has none to reproduce
    if math.isclose(d_min, trained.d_min):
        return trained.ghost_cells
    in_front = trained.d_edges[:-1] < d_min
    narrowest = float(np.diff(trained.d_edges)[in_front].min())
    return math.ceil(d_min / narrowest - 1e-9)


@torch.no_grad()
def predict(
    fit: Fit,
    grid: Grid | None = None,
    *,
    samples: int = 200,
    percentiles: Sequence[float] = DEFAULT_PERCENTILES,
    keep_samples: int = 0,
    cell_variance: bool | None = None,
    seed: int = 0,
    chunk_cells: int = DEFAULT_CHUNK_CELLS,
    device: str | None = None,
    progress: bool = True,
) -> DustMap:
    """Posterior map of a trained fit on a grid.

    Parameters
    ----------
    fit : Fit
    grid : Grid, optional
        Prediction grid; default the training grid refined 2.5× on each axis. Its foreground ghost cells are
        made as fine as the training grid's (the same ones where ``d_min`` is the same), so that extinction
        includes the foreground the stars constrained.
    samples : int
        Joint posterior samples drawn.
    percentiles : sequence of float
        Percentile levels (0-100) stored for density and extinction.
    keep_samples : int
        Number of density samples kept in the map (for ``query(mode="samples")``); 0 keeps none.
    cell_variance : bool, optional
        Add the variance that the inducing values leave out, ``K_xx - K_xz K_zz⁻¹ K_zx`` (O(n M²)). Default: as
        the model was trained. A ``method="newton"`` fit was trained with it (its ELBO holds the conditional
        covariance within each sightline), so its prediction draws it too, correlated along each sightline
        (independent between sightlines), uncentred: the trained posterior itself. Far from the inducing points
        it restores the prior's width, where the low-rank part alone would collapse onto the prior mean.
        An SVI fit was trained without it; asked for (``True``), each cell's conditional variance σ² is added
        as independent noise on phi, centred so that the mean *density* is unchanged:
        ``phi + σ ε - (ln 10) σ²/2``. Off by default, because training never saw this noise (the ELBO is that
        of phi = c + K_xz L_zz⁻ᵀ v) and the stars do not constrain it. Centred on phi instead, each cell's
        mean density would gain the log-normal factor exp((ln 10)² σ²/2), and sightline integrals would be
        biased high; measured on 3000 stars in a 2 × 2 × 31-cell sightline bundle with M = 60 (scale 0.57 dex²):
        extinction to 600 pc of 1.50 mag against 1.15 mag without the noise, the stars saying 1.17 mag.
        Centred in density, integrals stay unbiased but the band is set by the prior wherever M is small
        compared with the cells, hiding what the stars say (same bundle: a 0.27-0.33 mag band, against
        0.02 mag). It suits well-sampled maps, where σ² is small: on the Section 3 experiment (M = 1000,
        120,000 stars, fits with seeds 2 and 3) the band held the truth in 54.4% and 59.5% of cells with it,
        50.7% and 55.7% without, at the same median errors of 3.8% and 3.3% (``dustgp demo`` turns it on).
    seed : int
        Seeds the posterior draws.
    chunk_cells : int
        Cells per chunk (whole sightlines), bounding memory.
    device : str, optional
        Torch device (default: the fit's).
    progress : bool
        Progress bar over chunks.

    Returns
    -------
    DustMap
    """
    from . import __version__

    if samples < 2:
        raise ValueError(f"samples: expected at least 2 posterior samples, got {samples}")
    if not 0 <= keep_samples <= samples:
        raise ValueError(f"keep_samples: expected 0..{samples}, got {keep_samples}")
    grid = _default_grid(fit, grid)
    trained_with_it = fit.config.method == "newton"
    if cell_variance is None:
        cell_variance = trained_with_it
    gp = fit.model
    if device is not None:
        gp = gp.to(device)
    gp.eval()
    dtype, dev = gp.variational_mean.dtype, gp.variational_mean.device
    generator = torch.Generator(device=dev).manual_seed(seed)

    l_zz = gp.inducing_cholesky()
    whitened = gp.sample_whitened(samples, generator=generator)  # (S, M)
    if cell_variance and not trained_with_it:
        identity = torch.eye(l_zz.shape[0], dtype=dtype, device=dev)
        l_zz_inverse = torch.linalg.solve_triangular(l_zz, identity, upper=False)
    weights = gp.projection(whitened, l_zz)  # (M, S)
    if cell_variance and trained_with_it:
        factors, index = _column_factors(gp, grid, l_zz, COVARIANCE_STRIDE)
    lengths = torch.as_tensor(grid.path_lengths, dtype=torch.float32, device=dev)
    centres = torch.as_tensor(grid.cell_centers_xyz(), dtype=dtype).reshape(grid.n_d, grid.n_columns, 3)
    q = list(percentiles)

    n_q, shape = len(q), (grid.n_d, grid.n_columns)
    out = {name: np.empty(shape, dtype=np.float64) for name in ("rho_mean", "rho_std", "a_mean", "a_std")}
    out["rho_pct"] = np.empty((n_q, *shape))
    out["a_pct"] = np.empty((n_q, *shape))
    kept = np.empty((keep_samples, *shape), dtype=np.float32) if keep_samples else None

    per_chunk = max(1, chunk_cells // grid.n_d)
    starts = range(0, grid.n_columns, per_chunk)
    for start in tqdm(starts, disable=not progress, desc="predict", unit="chunk"):
        cols = slice(start, min(start + per_chunk, grid.n_columns))
        x = centres[:, cols].reshape(-1, 3).to(dev) / gp.length_unit
        if cell_variance and trained_with_it:
            phi = gp.phi(x, weights)
            factor = factors[index[cols]]  # (n_cols, n_d, n_d)
            noise = torch.randn(
                factor.shape[0], grid.n_d, samples, dtype=torch.float32, device=dev, generator=generator
            )
            phi = phi + torch.bmm(factor, noise).permute(2, 1, 0).reshape(samples, -1).to(phi.dtype)
        elif cell_variance:
            k_xz = gp.cross_covariance(x)
            phi = gp.mean_module.constant + (k_xz @ weights).T  # (S, n_d * n_cols)
            noise = torch.randn(phi.shape, dtype=dtype, device=dev, generator=generator)
            variance = gp.conditional_variance(k_xz, l_zz_inverse)
            # centred in density, not in phi: E[10^phi | v] stays the trained model's (see the docstring)
            phi = phi + noise * variance.sqrt() - (0.5 * math.log(10.0)) * variance
            del k_xz
        else:
            phi = gp.phi(x, weights)
        # summaries in float32: percentiles of 200 samples need no more, and sorting float64 takes twice as long
        rho = torch.pow(10.0, phi.float()).reshape(samples, grid.n_d, -1)
        ext = cumulative_extinction(rho, lengths)
        for prefix, value in (("rho", rho), ("a", ext)):
            out[f"{prefix}_mean"][:, cols] = value.mean(0).double().cpu().numpy()
            out[f"{prefix}_std"][:, cols] = value.std(0).double().cpu().numpy()
            out[f"{prefix}_pct"][:, :, cols] = percentiles_along(value, q).double().cpu().numpy()
        if kept is not None:
            kept[:, :, cols] = rho[:keep_samples].float().cpu().numpy()

    cube = (grid.n_d, grid.n_b, grid.n_l)
    meta: dict[str, Any] = {
        "dustgp_version": __version__,
        "config": fit.config.to_dict(),
        "seed": seed,
        "fit_seed": fit.config.seed,
        "hyperparameters": fit.hyperparameters(),
        "training_grid": fit.grid.to_dict(),
        "samples": samples,
        "cell_variance": cell_variance,
        "iterations": fit.iterations,
        "stopped_by": fit.stopped_by,
    }
    return DustMap(
        grid=grid,
        percentiles=np.asarray(q, dtype=float),
        density_mean=out["rho_mean"].reshape(cube),
        density_std=out["rho_std"].reshape(cube),
        density_percentiles=out["rho_pct"].reshape(n_q, *cube),
        extinction_mean=out["a_mean"].reshape(cube),
        extinction_std=out["a_std"].reshape(cube),
        extinction_percentiles=out["a_pct"].reshape(n_q, *cube),
        density_samples=None if kept is None else kept.reshape(keep_samples, *cube),
        meta=meta,
    )
