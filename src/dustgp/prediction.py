"""Prediction: posterior samples of the density on any grid, and their summaries (docs: Method §6).

One set of joint draws of the whitened inducing values is made first; every chunk of the prediction grid is then
projected from those same draws, so samples stay joint across chunks while memory stays bounded by the chunk size.
Chunks hold whole sightlines, so each sample is integrated along its sightline within its chunk; percentiles of
extinction are taken over integrated samples, never by integrating percentiles.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from ._version import __version__
from .grid import Grid
from .linalg import batched_eigh
from .model import DustGP
from .posterior_map import DEFAULT_PERCENTILES, PosteriorMap, keep_samples_for
from .projection import rbf_along_sightlines, rbf_apply_mixed
from .sightlines import LN10, cumulative_extinction

__all__ = ["FittedModel", "constrained_cells", "percentiles_along", "predict"]

logger = logging.getLogger(__name__)


class FittedModel(Protocol):
    """What :func:`predict` reads from a fit; a :class:`dustgp.fitting.Fit` is one.

    A protocol rather than an import of ``Fit``, so that prediction sits beside fitting and ``Fit.predict`` can
    call it without an import cycle (docs: Design notes, "Layers").
    """

    model: DustGP
    grid: Grid
    config: Any  # a dustgp.fitting.FitConfig: reads ``method``, ``seed`` and ``to_dict()``
    iterations: int
    stopped_by: str

    def hyperparameters(self) -> dict[str, float | list[float]]: ...


#: Cells per chunk: bounds memory to about chunk × (M + 2 samples) numbers.
DEFAULT_CHUNK_CELLS = 50_000


def percentiles_along(x: torch.Tensor, q: Sequence[float]) -> np.ndarray:
    """Percentiles (0-100) over the last axis with linear interpolation (numpy's default), shape ``(len(q), ...)``.

    Sorting once serves every level; ``torch.quantile`` refuses inputs of more than 2²⁴ elements. On the CPU
    the sort is numpy's vectorised one, several times faster than torch's on many short rows
    (benchmarks/README.md, "Prediction").

    >>> percentiles_along(torch.arange(11.0)[None, :], [16, 50, 84]).ravel().tolist()
    [1.6, 5.0, 8.4]
    """
    n = x.shape[-1]
    position = np.asarray(q, dtype=np.float64) / 100.0 * (n - 1)
    lower = np.minimum(np.floor(position).astype(np.int64), n - 1)
    upper = np.minimum(lower + 1, n - 1)
    weight = position - lower
    on_cpu = x.device.type == "cpu"
    ordered = np.sort(x.detach().numpy(), axis=-1) if on_cpu else x.sort(dim=-1).values.cpu().numpy()
    return np.moveaxis(ordered[..., lower] * (1.0 - weight) + ordered[..., upper] * weight, -1, 0)


#: Sightlines whose conditional covariance is computed lie no farther apart than this fraction of the shortest
#: scale length, at the far end of the grid; the others take their nearest computed neighbour's. Computing it
#: costs n M² (a triangular solve per cell), the largest part of a prediction after the samples themselves, and
#: it varies on the spacing of the inducing points, which is of the order of the scale lengths (the error this
#: makes, measured against every sightline: benchmarks/README.md, "Prediction").
COVARIANCE_SPACING = 0.25
#: The most sightlines along l or b that share one computed conditional covariance.
MAX_COVARIANCE_STRIDE = 8


def covariance_strides(grid: Grid, gamma_pc: Sequence[float]) -> tuple[int, int]:
    """Strides ``(along b, along l)`` between the sightlines whose conditional covariance is computed.

    The largest strides that keep computed sightlines within ``COVARIANCE_SPACING`` × the shortest scale
    length of each other at ``d_max`` (pc), between 1 and :data:`MAX_COVARIANCE_STRIDE`.
    """
    reach = COVARIANCE_SPACING * float(min(gamma_pc))
    strides = []
    for edges in (grid.b_edges, grid.l_edges):
        spacing = grid.d_max * math.radians(float(np.max(np.abs(np.diff(edges)))))
        strides.append(int(min(MAX_COVARIANCE_STRIDE, max(1, reach // spacing))))
    return strides[0], strides[1]


def _column_factors(
    gp: Any, grid: Grid, l_zz: torch.Tensor, strides: tuple[int, int]
) -> tuple[torch.Tensor, np.ndarray]:
    """Cholesky factors of the conditional covariance ``K_xx - K_xz K_zz⁻¹ K_zx`` within sightlines.

    Returns the factors ``(n_computed, n_d, n_d)`` (float32) of the sightlines at every ``strides[0]``-th b and
    ``strides[1]``-th l, and for every column of ``grid`` the index of the factor it uses (its nearest computed
    sightline).

    ``A = K_xz L_zz⁻ᵀ`` is formed by a triangular solve in float32: the solve is backward stable and the rows of A
    are bounded (``|A_i|² ≤ alpha``), so ``A Aᵀ`` keeps ~1e-7·cond(L_zz) of alpha. The prior within a sightline
    needs no n × n kernel: cells of one sightline differ by ``Δd`` along its unit vector ``û``, so
    ``K_xx = alpha exp(-Δd² Σ_k (û_k/γ_k)² / 2)``. Blocks that rounding makes indefinite get their eigenvalues
    floored at zero.
    """
    dev = l_zz.device
    stride_b, stride_l = strides
    i_b, i_l = np.arange(0, grid.n_b, stride_b), np.arange(0, grid.n_l, stride_l)
    picked = (i_b[:, None] * grid.n_l + i_l[None, :]).ravel()
    nearest_b = np.minimum(np.round(np.arange(grid.n_b) / stride_b).astype(int), i_b.size - 1)
    nearest_l = np.minimum(np.round(np.arange(grid.n_l) / stride_l).astype(int), i_l.size - 1)
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


def _density_centred(noise: torch.Tensor, variance: torch.Tensor) -> torch.Tensor:
    """ln rho of independent cell noise of ``variance`` (dex²) on phi, centred in density, not in phi:
    ``ln 10 (σ ε - (ln 10) σ²/2)``, so that E[10^phi | v] stays the trained model's (see :func:`predict`)."""
    return LN10 * (noise * variance.sqrt() - (0.5 * LN10) * variance)


def constrained_cells(star_distances: np.ndarray, trained: Grid, grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """Which cells of ``grid`` the stars of a fit constrain, and each column's reliable distance range.

    The rule: a cell is constrained when its centre lies in a column of the training grid that holds at least
    one star, no farther than the farthest star of that column. Beyond the farthest star (beyond ``d_max`` in
    particular), and in columns without stars or off the training grid's l, b, the map is the prior conditioned
    on the inducing values, not on stars. Cells in front of the nearest star are constrained: every star
    behind them bounds their integral. The range ``[nearest star, farthest star]`` of each column follows the
    ``DM_reliable_min`` / ``DM_reliable_max`` of Bayestar (Green et al. 2019, ApJ 887, 93) as ``dustmaps``
    reports it in the ``reliable_dist`` flag.

    Parameters
    ----------
    star_distances : numpy.ndarray, shape (2, n_b', n_l')
        Nearest and farthest star (pc) in each column of ``trained``; NaN where a column holds none
        (:attr:`dustgp.fitting.Fit.star_distances`).
    trained : Grid
        The training grid (shape ``(n_d', n_b', n_l')``).
    grid : Grid
        The prediction grid.

    Returns
    -------
    coverage : numpy.ndarray of bool, shape (n_d, n_b, n_l)
        True where the stars constrain the cell.
    reliable_distance : numpy.ndarray, shape (2, n_b, n_l)
        Nearest and farthest star (pc) of the training column under each column of ``grid``; NaN where none.

    Raises
    ------
    ValueError
        ``star_distances`` is not of shape ``(2, n_b', n_l')`` of the training grid.
    """
    star_distances = np.asarray(star_distances, dtype=float)
    if star_distances.shape != (2, trained.n_b, trained.n_l):
        raise ValueError(
            f"star_distances: expected shape (2, {trained.n_b}, {trained.n_l}) of the training grid, "
            f"got {star_distances.shape}"
        )
    l_c, b_c = np.meshgrid(grid.l_centers, grid.b_centers)  # (n_b, n_l)
    _, i_b, i_l = trained.locate(l_c, b_c, np.full(l_c.shape, trained.d_centers[0]))
    on_trained = i_b >= 0
    reliable = np.full((2, grid.n_b, grid.n_l), np.nan)
    reliable[:, on_trained] = star_distances[:, i_b[on_trained], i_l[on_trained]]
    with np.errstate(invalid="ignore"):  # NaN (no star) compares False: not constrained
        coverage = grid.d_centers[:, None, None] <= reliable[1][None]
    return coverage, reliable


def _default_grid(fit: FittedModel, grid: Grid | None) -> Grid:
    if grid is None:
        grid = fit.grid.refined(2.5)
    if fit.grid.ghost_cells == 0 and grid.ghost_cells > 0:
        # the model holds no dust in front of d_min: ghost cells would extrapolate the region's into it
        logger.warning(
            "the fit was trained without ghost cells (no dust in front of %g pc): the prediction grid's %d ghost "
            "cells are left out",
            fit.grid.d_min,
            grid.ghost_cells,
        )
        grid = grid.with_ghost_cells(0)
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
    fit: FittedModel,
    grid: Grid | None = None,
    *,
    samples: int = 200,
    percentiles: Sequence[float] = DEFAULT_PERCENTILES,
    keep_samples: int | None = None,
    cell_variance: bool | None = None,
    seed: int = 0,
    chunk_cells: int = DEFAULT_CHUNK_CELLS,
    device: str | None = None,
    progress: bool = True,
) -> PosteriorMap:
    """Posterior map of a trained fit on a grid.

    Parameters
    ----------
    fit : FittedModel
    grid : Grid, optional
        Prediction grid; default the training grid refined 2.5× on each axis. Its foreground ghost cells are
        made as fine as the training grid's (the same ones where ``d_min`` is the same), so that extinction
        includes the foreground the stars constrained.
    samples : int
        Joint posterior samples drawn.
    percentiles : sequence of float
        Percentile levels (0-100) stored for density and extinction.
    keep_samples : int, optional
        Joint density samples kept in the map, for ``query(mode="samples")`` and ``"random_sample"``; default
        :data:`dustgp.posterior_map.DEFAULT_KEEP_SAMPLES` (12, or ``samples`` if fewer); 0 keeps none. Each costs one
        float32 per cell: about 3.4 bytes per cell in NetCDF, so the default 12 add about 44 MB to a
        100 × 100 × 107-cell map whose summaries take about 56 MB.
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
        0.02 mag). It suits well-sampled maps, where σ² is small, such as the Section 3 experiment (``dustgp
        demo`` turns it on; measured coverage with and without it: docs, Design notes, "Cell variance").
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
    PosteriorMap
        With ``coverage`` (cells the stars constrain) and ``reliable_distance`` (nearest and farthest star per
        column), see :func:`constrained_cells`, when the fit records its stars' distances. Unconstrained cells
        always carry the conditional variance (their band widens toward the prior's), whatever ``cell_variance``.
    """
    if samples < 2:
        raise ValueError(f"samples: expected at least 2 posterior samples, got {samples}")
    keep_samples = keep_samples_for(keep_samples, samples)
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
        strides = covariance_strides(grid, fit.hyperparameters()["length_scale_pc"])
        factors, index = _column_factors(gp, grid, l_zz, strides)
    star_distances = getattr(fit, "star_distances", None)
    coverage, reliable = (None, None) if star_distances is None else constrained_cells(star_distances, fit.grid, grid)
    # Without the cell variance, the band of an unconstrained cell would be that of the low-rank part alone, which
    # collapses onto the prior mean away from the inducing points: narrower there than among the stars. Those
    # cells get the conditional variance (centred in density, as cell_variance=True does everywhere for SVI), so
    # their band widens toward the prior's. A generator of its own leaves the draws of constrained cells as they
    # were.
    widen = coverage is not None and not cell_variance and not bool(coverage.all())
    if widen:
        identity = torch.eye(l_zz.shape[0], dtype=dtype, device=dev)
        l_zz_inverse = torch.linalg.solve_triangular(l_zz, identity, upper=False)
        unconstrained = torch.as_tensor(~coverage.reshape(grid.n_d, grid.n_columns), device=dev)
        edge_generator = torch.Generator(device=dev).manual_seed(seed + 1)
    lengths = torch.as_tensor(grid.path_lengths, dtype=torch.float32, device=dev)
    centres = torch.as_tensor(grid.cell_centers_xyz(), dtype=dtype).reshape(grid.n_d, grid.n_columns, 3)
    q = list(percentiles)

    n_q, shape = len(q), (grid.n_d, grid.n_columns)
    out = {name: np.empty(shape, dtype=np.float64) for name in ("rho_mean", "rho_std", "a_mean", "a_std")}
    out["rho_pct"] = np.empty((n_q, *shape))
    out["a_pct"] = np.empty((n_q, *shape))
    kept = np.empty((keep_samples, *shape), dtype=np.float32) if keep_samples else None

    # Samples are laid out cell by sample, (n, S): ln rho = ln 10 (c + K_xz W) comes out of one GEMM with alpha
    # and ln 10 folded into W (an M × S matrix), and the sums, sorts and cumulative sums that follow all run along
    # contiguous axes (benchmarks/README.md, "Prediction").
    gamma = gp.covar_module.base_kernel.lengthscale.detach().reshape(3)
    ln_weights = weights * LN10  # for K_xz with alpha in it (SVI with cell variance)
    # the posterior mean's weights apart (in the model's precision), the draws' deviations in float32
    # (projection.rbf_apply_mixed)
    scale = LN10 * float(gp.covar_module.outputscale.detach())
    mean_weights = gp.projection(gp.variational_mean.detach()[None], l_zz)[:, 0]
    deviations = ((weights - mean_weights[:, None]) * scale).to(torch.float32)
    mean_weights = mean_weights * scale
    offset = float(gp.mean_module.constant.detach()) * LN10
    if cell_variance and trained_with_it:
        factors = factors.mul_(LN10)
    per_chunk = max(1, chunk_cells // grid.n_d)
    starts = range(0, grid.n_columns, per_chunk)
    for start in tqdm(starts, disable=not progress, desc="predict", unit="chunk"):
        cols = slice(start, min(start + per_chunk, grid.n_columns))
        n_cols = cols.stop - cols.start
        x = centres[:, cols].reshape(-1, 3).to(dev) / gp.length_unit
        if cell_variance and not trained_with_it:
            k_xz = gp.cross_covariance(x)
            log_rho = k_xz @ ln_weights
            log_rho += offset
        else:
            mean, log_rho = rbf_apply_mixed(x, gp.inducing_points.detach(), gamma, mean_weights, deviations)
            log_rho += (mean + offset).to(log_rho.dtype)[:, None]
        if cell_variance and trained_with_it:
            noise = torch.randn(n_cols, grid.n_d, samples, dtype=torch.float32, device=dev, generator=generator)
            log_rho.view(grid.n_d, n_cols, samples).add_(torch.bmm(factors[index[cols]], noise).transpose(0, 1))
        elif cell_variance:
            variance = gp.conditional_variance(k_xz, l_zz_inverse)[:, None]
            noise = torch.randn(log_rho.shape, dtype=dtype, device=dev, generator=generator)
            log_rho += _density_centred(noise, variance)
            del k_xz
        elif widen:
            outside = unconstrained[:, cols].reshape(-1)
            if bool(outside.any()):
                variance = gp.conditional_variance(gp.cross_covariance(x[outside]), l_zz_inverse)[:, None]
                noise = torch.randn(variance.shape[0], samples, dtype=dtype, device=dev, generator=edge_generator)
                log_rho[outside] += _density_centred(noise, variance).to(log_rho.dtype)
        # summaries in float32: percentiles of 200 samples need no more, and sorting float64 takes twice as long
        rho = log_rho.to(torch.float32).exp_().view(grid.n_d, n_cols, samples)
        del log_rho
        ext = cumulative_extinction(rho, lengths, dim=0)
        for prefix, value in (("rho", rho), ("a", ext)):
            std, mean = torch.std_mean(value, dim=-1)
            out[f"{prefix}_mean"][:, cols] = mean.cpu().numpy()
            out[f"{prefix}_std"][:, cols] = std.cpu().numpy()
            out[f"{prefix}_pct"][:, :, cols] = percentiles_along(value, q)
        if kept is not None:
            kept[:, :, cols] = rho[..., :keep_samples].permute(2, 0, 1).cpu().numpy()

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
        "coverage_rule": "constrained: centre no farther than the farthest star of its training column",
    }
    return PosteriorMap(
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
        coverage=coverage,
        reliable_distance=reliable,
    )
